"""Start or join a Ray cluster the same way from every command.

Locally (`address=None` and no RAY_ADDRESS) a Ray instance of this process's own is started, with
no dashboard and every listener we can choose on 127.0.0.1 (Ray's GCS itself still listens on all
interfaces; see the README): `ray.init()` alone would join whichever cluster last wrote
/tmp/ray/ray_current_cluster on this machine (a `ray start` or a `cluster_utils.Cluster` of another
process), and `starts_local_ray` would then shut down a cluster that is not ours. With an address
(`auto`, `ray://...`, `host:port`) or RAY_ADDRESS (set by `ray job submit`) that cluster is
joined. Workers inherit the offline settings (HF_HUB_OFFLINE, WANDB_MODE) of this process. Inside
a Ray job (`ray job submit`, cluster/submit.sh) the job's runtime env already holds its env vars:
only the keys it does not set are added (Ray refuses a driver runtime env that sets a key twice).
"""

from __future__ import annotations

import json
import os

PROPAGATED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_MODE", "TEAMSRL_CACHE",
              "TOKENIZERS_PARALLELISM", "TORCH_EXTENSIONS_DIR")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """`ray.init` once per process: start locally or connect to `address`."""
    import ray

    if ray.is_initialized():
        return
    env_vars = {k: os.environ[k] for k in PROPAGATED if k in os.environ}
    env_vars.setdefault("HF_HUB_OFFLINE", "1")
    job_env = _job_env_vars()
    env_vars = {k: v for k, v in env_vars.items() if k not in job_env}
    kwargs: dict = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": False}
    if starts_local_ray(address):
        address = "local"
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    ray.init(address=address, **kwargs)


def starts_local_ray(address: str | None) -> bool:
    """Whether `init_ray(address)` would start a Ray of this process's own (not join one).

    Only then may the caller shut Serve and Ray down at its end: `serve.shutdown()` on a joined
    cluster would delete every Serve app there (e.g. the vLLM app of cluster/serve-vllm.yaml).
    """
    import ray

    return not ray.is_initialized() and address is None and not os.environ.get("RAY_ADDRESS")


def _job_env_vars() -> dict:
    """The env vars of the runtime env of the Ray job this process is the driver of ({} if none).

    The job supervisor hands the job's config to its driver in RAY_JOB_CONFIG_JSON_ENV_VAR;
    `ray.init` merges it with the driver's runtime env and fails on a key both set.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
