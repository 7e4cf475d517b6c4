"""cluster/submit.sh against a real local head: `ray start --head` with token authentication
(dashboard on 127.0.0.1, its own token file and ports), a job without the token is refused, a job
with it runs `teamsrl evolve` from the uploaded working_dir with the runtime env's offline
settings and SUCCEEDS. The head is stopped by ending its own `ray start --block` process (never
`ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
from ray_local_head import BIN, local_head
from ray_local_head import submit as _submit

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A token-auth head on free ports; yields (dashboard URL, token file, env)."""
    with local_head(tmp_path_factory.mktemp("head")) as h:
        yield h.url, h.token, h.env


def test_job_without_the_token_is_refused(head):
    url, _, env = head
    r = _submit({k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
                | {"RAY_AUTH_MODE": "disabled", "RAY": str(BIN / "ray")},
                "--address", url, "--command", "evolve", "--config",
                "experiments/quickstart.yaml", "--", "--instruction", "x", "--action", "breadth",
                timeout=120)
    assert r.returncode != 0
    assert "401" in r.stdout + r.stderr or "Unauthorized" in r.stdout + r.stderr


def test_submitted_evolve_job_succeeds_with_the_token(head, tmp_path):
    url, token, env = head
    run_dir = tmp_path / "job-run"
    submit_env = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")} | {
        "RAY": str(BIN / "ray")}
    submission = f"teamsrl-test-{os.getpid()}"
    r = _submit(submit_env, "--address", url, "--token-file", str(token),
                "--python", sys.executable, "--command", "evolve",
                "--config", "experiments/quickstart.yaml", "--run-dir", str(run_dir),
                "--set", "llm.expert.max_tokens=8", "--submission-id", submission,
                "--", "--instruction", "Name three red fruits.", "--action", "add_constraints")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "ledger (this call): expert: 1 query, 0 cache hits" in out
    assert (run_dir / "ledger.sqlite").is_file()  # the job wrote where --run-dir said
    # the job API (with the token) shows the status and the runtime env of cluster/
    request = urllib.request.Request(f"{url}/api/jobs/{submission}",
                                     headers={"Authorization": f"Bearer {token.read_text()}"})
    info = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert info["status"] == "SUCCEEDED"
    assert info["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert info["runtime_env"]["working_dir"].startswith("gcs://")  # the checkout was uploaded
