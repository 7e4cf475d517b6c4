"""`policy.sampling: async`: PPO whose env runners never wait for each other or for the learner.

RLlib's PPO samples in rounds: every env runner samples one fragment, the round ends when the
slowest returns, the learner updates, the next round starts. Here a step is an LLM request whose
time varies with the completion's length, so a round lasts as long as its slowest fragment and
the other runners sit idle (issue 17: 0.61 of linear at 8 runners, most of the loss that wait;
`benchmarks/cluster_scaling.py`). `AsyncPPO` keeps one `sample()` in flight on every runner at
all times: a runner that returns is handed its next fragment at once, an iteration takes
fragments as they arrive until it holds `train_batch_size` env steps, and the learner updates
while the runners go on sampling.

RLlib's `Algorithm.train()` would also ask every runner for its connector states after each
update and wait up to 10 s (`sync_filters_on_rollout_workers_timeout_s`) for the answer, which
queues behind the fragment each runner is sampling: a round again. `AsyncPPOConfig` turns that
off, as IMPALA's config does, and the states come back with each fragment instead (one remote
call: fragment, states, metrics), merged and broadcast fire and forget after the update.

The price is staleness, as in IMPALA/APPO: a fragment in flight during an update was sampled
by the previous weights (new weights are queued behind it on its runner, fire and forget), so
PPO's ratio is taken against the policy that acted (the action log-probs the fragment carries),
usually one update old. Every fragment sampled is trained on (none is dropped at an iteration's
end); a fragment still in flight when training stops is lost with its runner, its LLM queries
in the ledger like every other.
"""

from __future__ import annotations

import time

from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

TAG = "teamsrl-async-sample"
POLL_S = 0.05  # how long one check for returned fragments waits


def _sample(runner):
    """One fragment, the runner's connector states and its metrics for the fragment."""
    return (runner.sample(), runner.get_state(not_components=COMPONENT_RL_MODULE),
            runner.get_metrics())


class AsyncPPOConfig(PPOConfig):
    """PPOConfig for `AsyncPPO`: the runners' states travel with their fragments."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or AsyncPPO)
        self._dont_auto_sync_env_runner_states = True  # no per-iteration round (docstring)


class AsyncPPO(PPO):
    """PPO with every env runner kept sampling (module docstring); with no remote runners
    (sampling in the driver) nothing can overlap and it is RLlib's PPO."""

    def training_step(self) -> None:
        """Take fragments as they arrive up to a train batch, update, queue the new weights."""
        group = self.env_runner_group
        if group is None or group.num_remote_workers() == 0:
            return super().training_step()
        episodes, states, runner_metrics, steps = [], [], [], 0
        deadline = time.monotonic() + self.config.sample_timeout_s
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            while steps < self.config.total_train_batch_size:
                # returned fragments, and the next fragment for every runner without one
                ready = group.foreach_env_runner_async_fetch_ready(_sample, tag=TAG,
                                                                   timeout_seconds=POLL_S)
                for fragment, state, metrics in ready:
                    episodes.extend(fragment)
                    states.append(state)
                    runner_metrics.append(metrics)
                    steps += int(metrics.get(NUM_ENV_STEPS_SAMPLED, 0))
                if not ready and (group.num_healthy_remote_workers() == 0
                                  or time.monotonic() > deadline):
                    break  # as PPO's round: train on what came; train() restores runners
            if not episodes:
                return
            self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                        default=0),
                },
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size,
                shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            # fire and forget: each runner applies them after the fragment it is sampling
            group.sync_weights(from_worker_or_learner_group=self.learner_group,
                               policies=set(learner_results[0]) - {ALL_MODULES},
                               inference_only=True, timeout_seconds=0.0)
            group.sync_env_runner_states(
                config=self.config, connector_states=states,
                env_steps_sampled=self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0),
                env_to_module=self.env_to_module_connector,
                module_to_env=self.module_to_env_connector)
