"""A real local Ray head for the job-submission tests (`ray start --head --block`).

Token authentication with its own token file, the dashboard and job API on 127.0.0.1, every port
free and chosen here, short socket paths. The head is stopped by ending its own `ray start
--block` process (never `ray stop`, which would stop every Ray on the machine). Used by
tests/integration/test_job_submit_local_head.py and test_pipeline_job_submit.py; importable as
`ray_local_head` because tests/ is on sys.path (tests/conftest.py, rootdir import mode).
"""

from __future__ import annotations

import itertools
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from teamsrl.llm.config import simulated_overrides

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_count = itertools.count()


@dataclass
class LocalHead:
    url: str          # the dashboard / job API, http://127.0.0.1:PORT
    token: Path       # the token file (RAY_AUTH_TOKEN_PATH)
    env: dict         # the head's environment (RAY_AUTH_MODE=token, the token path, PATH)
    log: Path         # ray start's output

    def submit_env(self) -> dict:
        """Environment for cluster/submit.sh: no RAY_AUTH_* (pass --token-file), RAY = our ray."""
        return {k: v for k, v in self.env.items() if not k.startswith("RAY_AUTH")} | {
            "RAY": str(BIN / "ray")}

    def job_info(self, submission_id: str) -> dict:
        """The job API's record of a job (status, message, runtime_env), with the token."""
        request = urllib.request.Request(
            f"{self.url}/api/jobs/{submission_id}",
            headers={"Authorization": f"Bearer {self.token.read_text().strip()}"})
        return json.loads(urllib.request.urlopen(request, timeout=30).read())

    def job_logs(self, submission_id: str, timeout: float = 60) -> str:
        """`ray job logs` of a job (never raises: the error text instead)."""
        try:
            r = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", self.url,
                                submission_id], env=self.env, capture_output=True, text=True,
                               timeout=timeout)
            return r.stdout + r.stderr
        except Exception as e:  # a diagnostic helper: report, do not mask the real failure
            return f"<ray job logs failed: {type(e).__name__}: {e}>"

    def stop_job(self, submission_id: str) -> None:
        subprocess.run([str(BIN / "ray"), "job", "stop", "--address", self.url, submission_id],
                       env=self.env, capture_output=True, text=True, timeout=120)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 180) -> None:
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


@contextmanager
def local_head(tmp: Path, num_cpus: int = 2) -> Iterator[LocalHead]:
    """Start a token-auth head on free ports under `tmp`; stop it on exit."""
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(16))
    gcs, dash, agent, client, metrics, agent_grpc, rt_agent = free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            # on SIGTERM the head drains for up to 30 s first (for Serve proxies in front of
            # traffic); here nothing is in front of it, and a head that ran the pipeline job
            # (its Serve app still up) took 32 s to stop instead of 3
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # short socket paths: AF_UNIX paths are limited to ~100 characters
    temp_dir = Path("/tmp") / f"teamsrl-head-{os.getpid()}-{next(_count)}"
    log = tmp / "head.log"
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}",
         f"--port={gcs}", "--node-ip-address=127.0.0.1", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--ray-client-server-port={client}", f"--metrics-export-port={metrics}",
         f"--runtime-env-agent-port={rt_agent}", f"--temp-dir={temp_dir}"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_for_dashboard(url, head)
        yield LocalHead(url, token, env, log)
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops its own processes on exit
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run cluster/submit.sh from the repository root."""
    return subprocess.run([str(ROOT / "cluster" / "submit.sh"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the tiny pipeline as a job
JOB_TIMEOUT_S = 1500  # queued + running; Ray waits forever for missing resources, we do not
TINY_PIPELINE = [
    "policy.iterations=1", "policy.train_batch_size=8", "policy.minibatch_size=4",
    "policy.num_epochs=1", "env.horizon=2",
    "generate.max_seeds=4", "generate.batch_seeds=4", "llm.expert.max_tokens=16",
    "env.reward.cut_rewrite_fails=false",  # 16-token rewrites: most are cut; this is plumbing
    "env.reward.invalid_fails=false", "env.reward.validity_weight=0",  # and not judged
    "generate.answer_max_tokens=16", "generate.drop_cut_answers=false",
    # one checkpoint (at the end): no test of the job reads a mid-run one (with SmolLM2 as the
    # base, before run_tiny_pipeline_job passed a tiny one, each took ~10 s to write: 2.3 GB)
    "finetune.max_steps=2", "finetune.max_length=128",
    "finetune.heldout_fraction=0.5",  # >= 2 non-members for the membership attack
    "evaluate.limit=2", "evaluate.mia.max_rows=4", "evaluate.mia.bootstrap=100",
    "evaluate.reference.max_tasks=4", "evaluate.reference.bootstrap=100",
    # the stages hand their artefacts on whatever the texts say: the LLMs are the simulated
    # engine (no sleep) and one fine-tuning process (SmolLM2 inside a Ray job: the evolve job of
    # test_job_submit_local_head; behind Serve: the `ray_serve` tests; 2 ranks: test_finetune_*)
    "finetune.num_processes=1",
    *simulated_overrides(time_scale=0),
]


@dataclass
class PipelineJob:
    run_dir: Path     # the job's run dir: dataset, model, eval results, report
    logs: str         # `ray job logs` of the job
    seconds: float    # submission to SUCCEEDED


def run_tiny_pipeline_job(tmp: Path) -> PipelineJob:
    """A fresh local head (2 CPUs: the Serve replica's `serving.num_cpus` in the quickstart),
    `cluster/submit.sh --config experiments/quickstart.yaml` with TINY_PIPELINE, wait for the job,
    stop the head. Raises AssertionError with the job's logs unless the job SUCCEEDED.

    Both arms fine-tune a tiny random Llama (`tiny_models.save_tiny_llama`) instead of SmolLM2:
    the job checks that the stages hand their artefacts on, which does not depend on the base
    model, and SmolLM2's two fine-tunes and evaluations took ~100 of the job's ~280 s (a 2.3 GB
    checkpoint each). tests/integration/test_finetune_smollm2.py fine-tunes SmolLM2 itself. For
    the same reason the expert and reviewer are `engine: simulated` and the fine-tune runs one
    process: alone, 93 s for the test against 151 s with SmolLM2 behind Serve and 2 processes
    (2026-12-02)."""
    from tiny_models import save_tiny_llama

    run_dir = tmp / "run"
    base = save_tiny_llama(tmp / "tiny-llama")
    submission = f"teamsrl-pipeline-{os.getpid()}-{next(_count)}"
    with local_head(tmp, num_cpus=2) as head:
        sets = [a for kv in [*TINY_PIPELINE, f"finetune.base_model={base}"]
                for a in ("--set", kv)]
        started = time.monotonic()
        r = submit(head.submit_env(), "--address", head.url, "--token-file", str(head.token),
                   "--python", sys.executable, "--config", "experiments/quickstart.yaml",
                   "--run-dir", str(run_dir), "--submission-id", submission, "--no-wait",
                   *sets, timeout=300)
        assert r.returncode == 0, f"submit.sh failed:\n{(r.stdout + r.stderr)[-3000:]}"
        done = ("SUCCEEDED", "FAILED", "STOPPED")
        status, info = "PENDING", {}
        while time.monotonic() - started < JOB_TIMEOUT_S:
            info = head.job_info(submission)
            status = info["status"]
            if status in done:
                break
            time.sleep(1)
        seconds = time.monotonic() - started
        logs = head.job_logs(submission)
        if status not in done:
            head.stop_job(submission)
        assert status == "SUCCEEDED", (
            f"job {submission}: {status} after {seconds:.0f} s ({info.get('message')}); "
            f"job logs (end):\n{logs[-8000:]}\nhead log: {head.log}")
    return PipelineJob(run_dir, logs, seconds)
