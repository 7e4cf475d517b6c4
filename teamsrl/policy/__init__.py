"""Policy training: RLlib PPO over the instruction MDP, with the LLMs on Ray Serve."""
