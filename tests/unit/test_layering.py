"""The layering of the package: llm -> actions/rewards/seeds -> envs -> policy/generation ->
pipeline/sweep -> cli, no import running back up. Checked in a fresh interpreter, from what
importing a module really loads (`sys.modules`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN_FOR_ENVS = ("teamsrl.config", "teamsrl.finetune", "teamsrl.evaluate", "teamsrl.policy",
                      "teamsrl.generation", "teamsrl.serving", "teamsrl.pipeline",
                      "teamsrl.sweep", "teamsrl.cli", "ray")


def loaded_by(module: str) -> list[str]:
    """Every module that `import module` loads in a fresh interpreter."""
    code = (f"import sys, json; before = set(sys.modules); import {module}; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["envs.instruction_mdp", "envs.vector", "envs.stepper"])
def test_envs_load_nothing_above_them(module):
    loaded = loaded_by(module)
    assert module in loaded  # the probe sees what it imports
    above = [m for m in loaded if m.split(".")[0] == "ray" or m.startswith(
        tuple(f"{p}." for p in FORBIDDEN_FOR_ENVS) + FORBIDDEN_FOR_ENVS[:-1])]
    assert above == [], f"importing {module} loads {above}"


def test_stage_configs_do_not_import_the_experiment_config():
    for module in ("envs.config", "teamsrl.generation.config", "teamsrl.policy.config",
                   "teamsrl.finetune.config", "teamsrl.evaluate.config", "teamsrl.llm.config"):
        assert "teamsrl.config" not in loaded_by(module), module
