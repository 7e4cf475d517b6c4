"""Start or join a Ray cluster the same way from every command.

Locally (`address=None`) a Ray instance is started with no dashboard and every listener we can
choose on 127.0.0.1 (Ray's GCS itself still listens on all interfaces; see the README). With an
address (`auto`, `ray://...`, `host:port`) the running cluster is joined. Workers inherit the
offline settings (HF_HUB_OFFLINE, WANDB_MODE) of this process.
"""

from __future__ import annotations

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
    kwargs: dict = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": False}
    if address is None:
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    ray.init(address=address, **kwargs)
