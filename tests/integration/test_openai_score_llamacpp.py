"""`OpenAIEngine.score` against a real third-party OpenAI-compatible server: llama-cpp-python's,
on the embedded SmolLM2 GGUF with `--logits_all true` (issue 17 item 6's Must-show).

Either the engine accepts the server at start-up (`from_spec`, probe on) and then scores every
candidate of benchmarks/openai_score_parity.py's table (14 pairs, 30 candidates) within 0.05 nats
of `TransformersEngine.score`, or it refuses the server at start-up with a message naming the
problem, and the refusal is checked to be deserved: a short pair's raw HTTP scores do differ.
llama-cpp-python 0.3.36's server is refused (its echo reads a plain prompt's log-probs one
position late and leaves out a chat prompt's special tokens); ~1-2 minutes on 2 cores.

Runs where a python with `llama_cpp.server` is found: `TEAMSRL_LLAMACPP_PYTHON` (e.g. a
separate venv: `python3.11 -m venv /tmp/lcp/srv && /tmp/lcp/srv/bin/pip install
'llama-cpp-python[server]'`), else this interpreter; skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from teamsrl.llm.config import ModelSpec
from teamsrl.llm.embedded import SMOLLM2_ID, smollm2_gguf
from teamsrl.llm.openai_engine import OpenAIEngine, ServerScoreError
from teamsrl.llm.schema import ScoreRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import openai_score_parity as parity  # noqa: E402

pytestmark = pytest.mark.integration

TOLERANCE = 0.05  # nats per candidate (the Must-show)
# Phrases of OpenAIEngine.probe's refusals, one per problem it can name.
PROBLEMS = ("echo inconsistent with generation", "implausible log-probs",
            "echo does not reconstruct the prompt", "no token boundary where the candidate",
            "returned no log-prob")


def _server_python() -> str | None:
    """An interpreter that can run `llama_cpp.server`, or None."""
    candidates = [os.environ["TEAMSRL_LLAMACPP_PYTHON"]] if os.environ.get(
        "TEAMSRL_LLAMACPP_PYTHON") else []
    if importlib.util.find_spec("llama_cpp") is not None:
        candidates.append(sys.executable)
    for python in candidates:
        try:
            ok = subprocess.run([python, "-c", "import llama_cpp.server.app"],
                                capture_output=True, timeout=120).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return python
    return None


SERVER_PYTHON = _server_python()


@pytest.fixture(scope="module")
def base_url():
    """llama-cpp-python's server on the embedded GGUF for this module."""
    if SERVER_PYTHON is None:
        pytest.skip("no python with llama_cpp.server: set TEAMSRL_LLAMACPP_PYTHON to one "
                    "(pip install 'llama-cpp-python[server]' in a separate venv)")
    with parity.llamacpp_server(SERVER_PYTHON, smollm2_gguf()) as url:
        yield url


def test_scores_match_the_local_engine_or_the_server_is_refused_at_start_up(base_url,
                                                                             smollm2_engine):
    spec = ModelSpec(model=SMOLLM2_ID, engine="openai", base_url=base_url,
                     served_model=parity.SERVED_MODEL)
    try:
        engine = OpenAIEngine.from_spec(spec)
    except ServerScoreError as refused:
        message = str(refused)
        assert message.startswith(f"{base_url} (model {parity.SERVED_MODEL!r}): ")
        assert any(p in message for p in PROBLEMS), message
        assert message.endswith("set probe_score: false in its model spec")
        # deserved: without the probe, a short pair's HTTP scores are off by more than the
        # quantised server's numerics (~0.3 nats) from the local model's on the same tokens
        # (no BOS, as the server sent them)
        raw = OpenAIEngine(base_url, SMOLLM2_ID, served_model=parity.SERVED_MODEL)
        (got,) = raw.score([ScoreRequest(prompt="A, B,", candidates=(" C", " Q"))])
        ref = [parity.local_no_bos(smollm2_engine, "A, B,", c) for c in (" C", " Q")]
        assert max(abs(a - b) for a, b in zip(got.logprobs, ref, strict=True)) > 1.0, (
            f"refused, yet 'A, B,' scores {got.logprobs} over HTTP vs {ref} locally: {message}")
        return
    rows = parity.compare(engine, smollm2_engine, base_url, TOLERANCE)
    assert len(parity.parity_table()) >= 10
    off = [(r["pair"], r["candidate"], r["local"], r["http"], r["error"]) for r in rows
           if not r["within"]]
    assert not off, f"accepted at start-up, yet these differ by > {TOLERANCE} nats: {off}"
