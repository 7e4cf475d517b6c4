"""Shared fixtures. Heavy ones (the embedded models) are session-scoped: loaded once per run."""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from ray_test_env import RAY_IDLE_SETTINGS  # noqa: E402  (tests/ is on sys.path here)

for _key, _value in RAY_IDLE_SETTINGS.items():  # the test Ray clusters poll less while idle
    os.environ.setdefault(_key, _value)

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
    fine-tuned model, eval/ and report/. 93 s alone (simulated LLMs, a tiny Llama), once per
    worker that needs it: tests of the report or the evaluation may reuse its artefacts
    (read-only) instead of making their own (in the same file: one file is one xdist unit)."""
    from ray_local_head import run_tiny_pipeline_job

    return run_tiny_pipeline_job(tmp_path_factory.mktemp("pipeline-job"))


# ---------------------------------------------------------------- two workers (`make test`)
# `make test` runs 2 pytest-xdist workers with `--dist loadfile --no-loadscope-reorder`: a unit of
# work is a test file (its module fixtures built once, in one process), except that the files
# using `ray_serve` are one unit together (`FileOrServeScheduling`); units are handed, in name
# order, to whichever worker is nearly done. The serve files then run one after the other in one
# worker and share one Ray with the Serve app: one start (ray.init, SmolLM2 loaded into a replica)
# instead of one per run of consecutive serve files a worker happened to get (~20-30 s each, 6-8
# of them a suite). An ordering hook used to sit here (the longest files first); applied, it ran
# the heaviest Ray files beside each other and the suite slower, so it was taken out.
# test_finetune_ray shuts down any Ray of its process to start a 2-CPU one of its own; `ray_serve`
# is never up during a file that does not use it (its teardown looks at the next test).
SERVE_UNIT = "ray_serve"
_TAKES_RAY_SERVE = re.compile(r"def \w+\([^)]*\bray_serve\b")


def serve_files_by_source(root: Path) -> set[str]:
    """Test files (paths relative to `root`, as in node ids) with a test or fixture taking
    `ray_serve`, read from their source: xdist's controller schedules node ids before any worker
    has collected, so it cannot ask the items."""
    return {str(p.relative_to(root)) for p in sorted((root / "tests").rglob("test_*.py"))
            if _TAKES_RAY_SERVE.search(p.read_text(encoding="utf-8"))}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every file whose tests use `ray_serve` is one the scheduler puts in the serve unit (one
    that used it only through a fixture defined elsewhere would be missed): else stop."""
    missed = _serve_files(items) - {config.rootpath / f
                                    for f in serve_files_by_source(config.rootpath)}
    if missed:
        raise pytest.UsageError(
            f"tests/conftest.py: {sorted(map(str, missed))} use ray_serve but no test or fixture "
            "of theirs takes it as a parameter, so FileOrServeScheduling would not keep them "
            "with the other serve files: take `ray_serve` as a parameter in the file itself")


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the files using `ray_serve` as one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    serve = serve_files_by_source(config.rootpath)

    class FileOrServeScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return SERVE_UNIT if file in serve else file

    return FileOrServeScheduling(config, log)
