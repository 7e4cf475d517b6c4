"""The pipeline's stage bookkeeping: finished stages are skipped, a failed one is rerun."""

from __future__ import annotations

import json

import pytest

from teamsrl import pipeline
from teamsrl.config import load_config


def test_rerun_after_a_failure_resumes_at_the_failed_stage(tmp_path, monkeypatch):
    calls: list[str] = []
    fail = {"second": True}

    def first(config, address):
        calls.append("first")
        return "ok"

    def second(config, address):
        calls.append("second")
        if fail["second"]:
            raise RuntimeError("killed mid-stage")
        return "ok too"

    monkeypatch.setattr(pipeline, "STAGES", [("first", first), ("second", second)])
    config = load_config(None, [f"run_dir={tmp_path}"])
    with pytest.raises(RuntimeError, match="killed mid-stage"):
        pipeline.run_pipeline(config, echo=lambda _: None)
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert state["first"]["done"] and "second" not in state

    fail["second"] = False
    lines: list[str] = []
    pipeline.run_pipeline(config, echo=lines.append)
    assert calls == ["first", "second", "second"]
    assert "[1/2] first: already done, skipped" in lines
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert state["second"] == {"done": True, "seconds": state["second"]["seconds"],
                               "summary": "ok too"}


def test_quickstart_config_is_valid():
    config = load_config("experiments/quickstart.yaml")
    assert config.env.horizon == 6 and config.policy.num_cpus_per_env_runner == 0
