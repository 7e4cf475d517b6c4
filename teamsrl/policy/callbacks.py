"""RLlib callbacks that turn the env's step infos into per-iteration metrics.

Each finished episode adds its reward components, action counts and step count as sums; the
driver divides by the step count (`summarize`), so the numbers are exact per-iteration means over
all env runners, not smoothed estimates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

PREFIX = "teamsrl"


class InstructionMetrics(RLlibCallback):
    """Sums of reward components, actions and failures per iteration (`teamsrl/...` keys)."""

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        """Log the finished episode's sums (reset info excluded)."""
        if metrics_logger is None:
            return
        infos = [i for i in episode.get_infos() if isinstance(i, Mapping) and "action_name" in i]
        log = metrics_logger.log_value
        log((PREFIX, "steps"), len(infos), reduce="sum")
        log((PREFIX, "episodes"), 1, reduce="sum")
        for info in infos:
            for name, value in info.get("reward_components", {}).items():
                log((PREFIX, "reward", name), float(value), reduce="sum")
            log((PREFIX, "actions", info["action_name"]), 1, reduce="sum")
            if info.get("failure"):
                log((PREFIX, "failures"), 1, reduce="sum")
            if info.get("timeouts"):
                log((PREFIX, "timeouts"), int(info["timeouts"]), reduce="sum")
            for role, n in info.get("queries", {}).items():
                log((PREFIX, "queries_by_env", role), int(n), reduce="sum")


def summarize(result: Mapping[str, Any], action_names: list[str]) -> dict[str, float]:
    """Flat per-iteration metrics from an RLlib result (means per env step where it applies)."""
    runners = result.get("env_runners", {})
    ours = runners.get(PREFIX, {})
    steps = float(ours.get("steps", 0.0)) or 0.0
    out: dict[str, float] = {
        "rollout/return_mean": float(runners.get("episode_return_mean", float("nan"))),
        "rollout/episode_len_mean": float(runners.get("episode_len_mean", float("nan"))),
        "rollout/env_steps": float(runners.get("num_env_steps_sampled", 0.0)),
        "rollout/episodes": float(ours.get("episodes", 0.0)),
    }
    for name, total in ours.get("reward", {}).items():
        out[f"reward/{name}"] = float(total) / steps if steps else float("nan")
    actions = ours.get("actions", {})
    for name in action_names:
        out[f"actions/{name}"] = float(actions.get(name, 0.0))
    out["rollout/failure_rate"] = float(ours.get("failures", 0.0)) / steps if steps else 0.0
    out["rollout/llm_timeouts"] = float(ours.get("timeouts", 0.0))
    timers = result.get("timers", {})
    # RLlib's timers (smoothed over recent iterations)
    out["timing/sample_s"] = float(timers.get("env_runner_sampling_timer", float("nan")))
    out["timing/learn_s"] = float(timers.get("learner_update_timer", float("nan")))
    out["timing/iteration_s"] = float(result.get("time_this_iter_s", float("nan")))
    learner = result.get("learners", {}).get("default_policy", {})
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss"):
        if key in learner:
            out[f"learner/{key}"] = float(learner[key])
    return out
