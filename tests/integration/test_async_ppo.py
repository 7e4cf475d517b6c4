"""`policy.sampling: async` (teamsrl.policy.async_ppo.AsyncPPO): no env runner waits for another,
and no fragment sampled is dropped.

The property is about scheduling, not text: the env is a 5-step toy whose one runner can be held
at a gate (a Ray actor the test opens), on a local Ray of its own (no Serve app: not needed).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

HORIZON = 5
BLOCKED_REWARD = 1000.0  # a step of runner 2's first episode (the one held at the gate)
GATE = "teamsrl-test-async-gate"
ENV = "teamsrl-test/AsyncGate-v0"
TIMEOUT_S = 30.0  # how long RLlib's synchronous calls wait for a runner (a round's sample(),
# the connector states asked after each update); an update from runner 1 alone takes < 1 s


class Gate:
    """Opened once by the test; `wait` returns when it is."""

    def __init__(self) -> None:
        import asyncio

        self.opened = asyncio.Event()

    async def wait(self) -> None:
        await self.opened.wait()

    async def open(self) -> None:
        self.opened.set()


@pytest.fixture(scope="module")
def local_ray():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def gate_env(config):
    """Every episode pays 1 a step, except runner 2's first: held at its first step until the
    gate opens, it pays BLOCKED_REWARD a step (so its return tells it apart)."""
    import gymnasium as gym
    import ray

    class GateEnv(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def __init__(self) -> None:
            self.worker, self.t, self.episodes = config.worker_index, 0, 0

        def reset(self, *, seed=None, options=None):
            self.t, self.episodes = 0, self.episodes + 1
            return np.zeros(1, np.float32), {}

        def step(self, action):
            held = self.worker == 2 and self.episodes == 1
            if held and self.t == 0:
                ray.get(ray.get_actor(GATE, namespace="teamsrl-test").wait.remote())
            self.t += 1
            return (np.zeros(1, np.float32), BLOCKED_REWARD if held else 1.0, False,
                    self.t >= HORIZON, {})

    return GateEnv()


def test_the_policy_config_picks_the_algorithm():
    from teamsrl.config import load_config
    from teamsrl.policy.async_ppo import AsyncPPO
    from teamsrl.policy.train import build_ppo

    assert build_ppo(load_config(None, ["policy.sampling=async"]), 60.0, 0).algo_class \
        is AsyncPPO
    assert build_ppo(load_config(None, []), 60.0, 0).algo_class is not AsyncPPO


def test_a_held_runner_holds_back_no_update_and_its_fragment_is_trained_on_later(local_ray):
    import ray
    from ray import cloudpickle
    from ray.tune.registry import register_env

    from teamsrl.policy.async_ppo import AsyncPPOConfig

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # runners cannot import tests/
    gate = ray.remote(Gate).options(name=GATE, namespace="teamsrl-test", num_cpus=0).remote()
    register_env(ENV, gate_env)
    config = (AsyncPPOConfig().environment(ENV)
              .env_runners(num_env_runners=2, num_cpus_per_env_runner=0,
                           rollout_fragment_length=HORIZON, sample_timeout_s=TIMEOUT_S)
              .training(train_batch_size_per_learner=2 * HORIZON, minibatch_size=HORIZON,
                        num_epochs=1)
              .debugging(seed=0))
    config.sync_filters_on_rollout_workers_timeout_s = TIMEOUT_S  # no setter in RLlib 2.60
    algo = config.build_algo()
    try:
        # runner 2 is held: two updates from runner 1's fragments alone, neither waiting
        for _ in range(2):
            start = time.monotonic()
            result = algo.train()
            assert time.monotonic() - start < TIMEOUT_S / 2  # any wait on runner 2: >= TIMEOUT_S
            runners = result["env_runners"]
            assert runners["num_env_steps_sampled"] >= 2 * HORIZON
            assert runners["episode_return_max"] == pytest.approx(HORIZON)
        ray.get(gate.open.remote())
        # the held fragment, sampled before either update, reaches a later one
        returns = []
        for _ in range(4):
            returns.append(algo.train()["env_runners"]["episode_return_max"])
            if returns[-1] == pytest.approx(HORIZON * BLOCKED_REWARD):
                break
        assert returns[-1] == pytest.approx(HORIZON * BLOCKED_REWARD), returns
    finally:
        ray.get(gate.open.remote())  # a failed assertion above must not leave runner 2 held
        algo.stop()
        ray.kill(gate)
