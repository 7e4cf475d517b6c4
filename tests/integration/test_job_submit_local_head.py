"""cluster/submit.sh against a real local head: `ray start --head` with token authentication
(dashboard on 127.0.0.1, its own token file and ports), a job without the token is refused, a job
with it runs `teamsrl evolve` from the uploaded working_dir with the runtime env's offline
settings and SUCCEEDS. The head is stopped by ending its own `ray start --block` process (never
`ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # answering (401: it wants the token)
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"no dashboard at {url} after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A token-auth head on free ports; yields (dashboard URL, token file, env)."""
    tmp = tmp_path_factory.mktemp("head")
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(16))
    gcs, dash, agent, client, metrics, agent_grpc, rt_agent = _free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "PATH": f"{BIN}:{env.get('PATH', '')}"}
    # short socket paths: AF_UNIX paths are limited to ~100 characters
    temp_dir = Path("/tmp") / f"teamsrl-head-{os.getpid()}"
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
         f"--port={gcs}", "--node-ip-address=127.0.0.1", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--ray-client-server-port={client}", f"--metrics-export-port={metrics}",
         f"--runtime-env-agent-port={rt_agent}", f"--temp-dir={temp_dir}"],
        env=env, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(url, head)
        yield url, token, env
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops its own processes on exit
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "cluster" / "submit.sh"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


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
