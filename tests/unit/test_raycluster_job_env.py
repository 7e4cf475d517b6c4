"""`teamsrl.raycluster` inside a Ray job: no env var key set twice, a joined cluster is left up.

Inside `ray job submit` the driver's `ray.init(runtime_env=...)` is merged with the job's runtime
env and Ray refuses a key both set (the pipeline job failed that way before this was fixed).
`ray.init` is replaced by a recorder: no Ray starts here.
"""

from __future__ import annotations

import json

import ray

from teamsrl import raycluster


def _record_init(monkeypatch) -> dict:
    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    return seen


def test_inside_a_job_only_keys_the_job_does_not_set_are_passed(monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": "gcs://x.zip",
                         "env_vars": {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}}}))
    monkeypatch.setenv("TEAMSRL_CACHE", "/tmp/cache")
    monkeypatch.setenv("WANDB_MODE", "offline")
    seen = _record_init(monkeypatch)
    raycluster.init_ray("auto")
    env_vars = seen["runtime_env"]["env_vars"]
    assert env_vars["TEAMSRL_CACHE"] == "/tmp/cache"
    assert not {"HF_HUB_OFFLINE", "WANDB_MODE"} & set(env_vars)
    assert seen["address"] == "auto"


def test_outside_a_job_the_offline_settings_are_passed(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    seen = _record_init(monkeypatch)
    raycluster.init_ray(None, num_cpus=2)
    assert seen["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert seen["runtime_env"]["env_vars"]["WANDB_MODE"] == "offline"
    assert seen["num_cpus"] == 2 and seen["include_dashboard"] is False
    # "local", not None: ray.init(None) joins whatever cluster last wrote
    # /tmp/ray/ray_current_cluster on this machine, which starts_local_ray would then shut down
    assert seen["address"] == "local"


def test_ray_address_is_joined_not_replaced_by_a_local_ray(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # set by `ray job submit`
    seen = _record_init(monkeypatch)
    raycluster.init_ray(None, num_cpus=2)
    assert seen["address"] is None and "num_cpus" not in seen  # ray.init reads RAY_ADDRESS


def test_a_garbled_job_config_is_ignored(monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{not json")
    assert raycluster._job_env_vars() == {}


def test_only_a_ray_of_our_own_is_shut_down(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert raycluster.starts_local_ray(None)
    assert not raycluster.starts_local_ray("auto")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # set by `ray job submit`
    assert not raycluster.starts_local_ray(None)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.delenv("RAY_ADDRESS")
    assert not raycluster.starts_local_ray(None)
