"""Shared fixtures. Heavy ones (the embedded models) are session-scoped: loaded once per run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_configure(config):
    """Under xdist, torch in each worker process runs on its share of the cores (`make test`: 2
    workers on 2 cores, one thread each). At torch's default, one thread per core, an op's
    threads meet at a barrier and wait there for a core the other worker holds (teamsrl.cpu):
    the evaluate fixture's 4 SmolLM2 training steps took 87 s beside the other worker, 21 s
    alone. Subprocesses and Ray workers set their own threads (Ray from num_cpus, the engines'
    ThreadGovernor)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture(scope="session")
def smollm2_engine():
    """The embedded SmolLM2-135M-Instruct engine (loaded once per test session)."""
    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.transformers_engine import TransformersEngine

    return TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=16)


@pytest.fixture
def embedded_client(smollm2_engine, tmp_path):
    """A client whose expert and reviewer share the embedded engine; cache and ledger on disk."""
    from teamsrl.llm.cache import ResponseCache
    from teamsrl.llm.client import LLMClient
    from teamsrl.llm.ledger import QueryLedger

    client = LLMClient(
        {"expert": smollm2_engine, "reviewer": smollm2_engine},
        cache=ResponseCache(tmp_path / "cache.sqlite"),
        ledger=QueryLedger(tmp_path / "ledger.sqlite"),
    )
    yield client
    client.close()


_ray_serve_app: dict = {}  # the live (handle, ExperimentConfig, ServeConfig), if any
_next_item: dict = {}      # the item pytest runs after the one being torn down


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    _next_item["item"] = nextitem  # read by ray_serve's teardown, which runs after this


def _start_ray_serve(tmp_path_factory):
    import socket

    import ray

    from teamsrl.config import load_config
    from teamsrl.serving.config import ServeConfig
    from teamsrl.serving.deployment import deploy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path_factory.mktemp("serve-run")
    config = load_config(None, [f"run_dir={run_dir}", "llm.expert.max_tokens=24",
                                "env.reward.cut_rewrite_fails=false",
                                "env.reward.invalid_fails=false", "env.reward.validity_weight=0"])
    serve_config = ServeConfig(http_port=port, max_batch_size=8, max_ongoing_requests=32)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}})
    try:
        return deploy(config.llm, serve_config, run_dir, stage="test"), config, serve_config
    except BaseException:
        ray.shutdown()
        raise


def _stop_ray_serve() -> None:
    import ray
    from ray import serve

    _ray_serve_app.clear()
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory):
    """One local Ray (2 CPUs) with the LLM app deployed, shared by consecutive test files that
    need it: started by the first, stopped after the last of them (an idle Ray with the app
    deployed keeps ~0.1 of a core busy, measured, which the other files would pay for).

    Yields (handle, ExperimentConfig, ServeConfig). HTTP binds 127.0.0.1 on a free port.
    """
    if not _ray_serve_app:
        _ray_serve_app["app"] = _start_ray_serve(tmp_path_factory)
    yield _ray_serve_app["app"]
    following = _next_item.get("item")
    if following is None or following.path not in _serve_files(following.session.items):
        _stop_ray_serve()


def _serve_files(items) -> set[Path]:
    """The test files among `items` that use `ray_serve` (directly or through a fixture)."""
    return {item.path for item in items if "ray_serve" in item.fixturenames}


@pytest.fixture(scope="session")
def pipeline_job_run(tmp_path_factory):
    """The quickstart pipeline, tiny, submitted as a Ray job to a local head (which is stopped
    before the tests run): a `ray_local_head.PipelineJob` whose run_dir holds both datasets, the
    fine-tuned model, eval/ and report/. 151 s alone, 380 s beside the other xdist worker
    (fresh-clone CI), once per worker that needs it: tests of the report or the evaluation may
    reuse its artefacts (read-only) instead of making their own (in the same file: one file is
    one xdist unit)."""
    from ray_local_head import run_tiny_pipeline_job

    return run_tiny_pipeline_job(tmp_path_factory.mktemp("pipeline-job"))


# ---------------------------------------------------------------- two workers (`make test`)
# `make test` runs 2 pytest-xdist workers with `--dist loadfile --no-loadscope-reorder`: a test
# file is one unit of work (its module fixtures built once, in one process), handed to whichever
# worker is nearly done, in name order. An ordering hook used to sit here (the longest files
# first, the `ray_serve` files next to each other); it never took effect (it returned when
# `config.option.dist` was "no", which xdist sets inside its workers, where collection happens).
# Applied at last (4add37c), the suite ran slower: the heaviest Ray files then ran beside each
# other (test_generation beside test_policy_training: 256 and 274 s, against 205 and 192 in name
# order, whose neighbours are lighter), so it was taken out again. test_finetune_ray shuts down
# any Ray of its process to start a 2-CPU one of its own; `ray_serve` is never up during a file
# that does not use it (its teardown looks at the next test).
