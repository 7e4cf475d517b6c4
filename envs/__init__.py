"""Gymnasium environments of teamsrl; importing this package registers them.

    import envs, gymnasium
    env = gymnasium.make("teamsrl/InstructionMDP-v0", config=EnvConfig(), client=client)
    venv = gymnasium.make_vec("teamsrl/InstructionMDP-v0", num_envs=4,
                              vectorization_mode="vector_entry_point", config=..., client=client)

The env is built from its own parts (see `envs.instruction_mdp`); `teamsrl.mdp` builds it from an
experiment config, and RLlib reaches it under the same id through `teamsrl.policy.train`'s env
creator. The registered time limit is the default horizon (6); an env built with another horizon
truncates itself there too (pass `max_episode_steps=` to `make` to match the wrapper).
"""

import gymnasium

INSTRUCTION_MDP_ID = "teamsrl/InstructionMDP-v0"

if INSTRUCTION_MDP_ID not in gymnasium.registry:
    gymnasium.register(
        INSTRUCTION_MDP_ID,
        entry_point="envs.instruction_mdp:InstructionMDPEnv",
        vector_entry_point="envs.vector:InstructionMDPVectorEnv",
        max_episode_steps=6,
        nondeterministic=False,
    )
