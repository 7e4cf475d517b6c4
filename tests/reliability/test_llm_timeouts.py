"""An LLM call that hangs past its timeout becomes a counted failure, never a hung run.

Policy: `ServeLLMClient` cancels a request unanswered after `serving.request_timeout_s`, sends it
again `serving.timeout_retries` times, then drops it (a ledger failure) and raises
`LLMTimeoutError` with the answers that did arrive; the env turns each dropped rewrite or verdict
into a failed step with reason "timeout" and a reward of exactly 0, leaving the other sub-envs'
steps untouched. The unit tests run the real client logic over an in-process handle and a
sleeping engine (the property does not depend on text); the last test uses the real Serve app.
"""

from __future__ import annotations

import time

import pytest
from embedding_doubles import NO_JUDGE, HashEmbedder
from reliability_doubles import SleepingEngine, ThreadHandle

from envs.stepper import BatchStepper
from teamsrl.config import load_config
from teamsrl.llm.client import LLMClient
from teamsrl.llm.engine import LLMTimeoutError
from teamsrl.llm.ledger import QueryLedger
from teamsrl.mdp import make_env
from teamsrl.outcomes import Failure, FailureKind
from teamsrl.serving.client import ServeLLMClient

TIMEOUT_S = 0.3
TIMEOUT = Failure(FailureKind.TIMEOUT)


def _served(tmp_path, engine, retries: int):
    local = LLMClient({"expert": engine, "reviewer": engine},
                      ledger=QueryLedger(tmp_path / "ledger.sqlite", stage="test"))
    config = load_config(None, list(NO_JUDGE))
    client = ServeLLMClient(ThreadHandle(local), config.llm, timeout_s=TIMEOUT_S, stage="test",
                            timeout_retries=retries)
    client.count_tokens = lambda role, text: len(text.split())  # no tokenizer load needed
    return client, local


def _envs(client, instructions):
    config = load_config(None, list(NO_JUDGE))
    envs = [make_env(config, client, embedder=HashEmbedder(), seed=i)
            for i in range(len(instructions))]
    for env, text in zip(envs, instructions, strict=True):
        env.reset(options={"instruction": text})
    return envs


@pytest.mark.parametrize("retries", [0, 2])
def test_hung_rewrite_fails_its_own_step_only_with_a_neutral_reward(tmp_path, retries):
    engine = SleepingEngine()
    client, local = _served(tmp_path, engine, retries)
    envs = _envs(client, ["Write a poem about rain.", "HANG: list three rivers.",
                          "Explain photosynthesis."])
    start = time.monotonic()
    try:
        results = BatchStepper(client).step(envs, [0, 1, 2])
    finally:
        engine.release.set()
    elapsed = time.monotonic() - start
    # bounded: (1 + retries) timeouts, not a hang
    assert elapsed < (1 + retries) * TIMEOUT_S + 2.0, elapsed
    _, reward, terminated, truncated, info = results[1]
    assert info["failure"] == TIMEOUT and info["timeouts"] == 1
    assert reward == 0.0 and all(v == 0.0 for v in info["reward_components"].values())
    assert info["instruction"] == "HANG: list three rivers."  # kept, as after a failed rewrite
    assert not terminated and not truncated and info["step"] == 1
    for i in (0, 2):  # batch-mates keep their answers and their normal rewards
        assert results[i][4]["failure"] is None and results[i][4]["reviewed"]
        assert results[i][1] != 0.0
    assert engine.seen == {next(t for t in engine.seen if "HANG" in t): 1 + retries}
    totals = local.ledger.totals(stage="test")
    assert totals["expert"].failures == 1  # counted once per dropped request
    assert totals["reviewer"].failures == 0
    # the episode goes on: the next step of the same env is a normal one once the server answers
    nxt = BatchStepper(client).step([envs[1]], [0])[0]
    assert nxt[4]["failure"] is None and nxt[4]["step"] == 2


def test_a_retry_that_gets_an_answer_is_not_a_failure(tmp_path):
    engine = SleepingEngine(hang_times=1)  # hangs the first time only
    client, local = _served(tmp_path, engine, retries=1)
    (env,) = _envs(client, ["HANG once: name a planet."])
    try:
        _, reward, _, _, info = env.step(0)
    finally:
        engine.release.set()
    assert info["failure"] is None and info["timeouts"] == 0 and info["reviewed"]
    assert reward != 0.0
    assert local.ledger.totals(stage="test")["expert"].failures == 0


def test_hung_verdict_fails_the_step_and_counts_a_reviewer_failure(tmp_path):
    engine = SleepingEngine(hang_in=("score",))  # the rewrite comes back, the verdict hangs
    client, local = _served(tmp_path, engine, retries=0)
    (env,) = _envs(client, ["HANG: name two oceans."])
    try:
        _, reward, _, _, info = env.step(0)
    finally:
        engine.release.set()
    assert info["failure"] == TIMEOUT and reward == 0.0 and info["reviewed"]
    totals = local.ledger.totals(stage="test")
    assert totals["reviewer"].failures == 1 and totals["expert"].failures == 0


def test_direct_callers_get_a_clear_timeout_error_with_the_answers_that_arrived(tmp_path):
    engine = SleepingEngine()
    client, _ = _served(tmp_path, engine, retries=0)
    reqs = [client.request("expert", [{"role": "user", "content": t}], seed=1)
            for t in ("fine", "HANG here", "also fine")]
    try:
        with pytest.raises(LLMTimeoutError, match=r"expert chat: 1 of 3 request\(s\) got no "
                           r"answer within 0.3 s \(1 attempt\(s\) each\)") as err:
            client.chat("expert", reqs)
    finally:
        engine.release.set()
    assert [r is None for r in err.value.partial] == [False, True, False]
    assert isinstance(err.value, TimeoutError)


def test_timeout_settings_are_validated():
    from teamsrl.config import ConfigError

    with pytest.raises(ConfigError, match=r"key 'serving.timeout_retries' = -1"):
        load_config(None, ["serving.timeout_retries=-1"])
    with pytest.raises(ConfigError, match=r"key 'serving.request_timeout_s' = 0"):
        load_config(None, ["serving.request_timeout_s=0"])


@pytest.mark.integration
def test_serve_path_a_request_slower_than_the_timeout_is_a_counted_failure(ray_serve):
    """The real app: SmolLM2 needs far more than 50 ms for a rewrite, so the handle's own
    TimeoutError is what the client meets; the replica still finishes and caches the answer."""
    handle, config, _ = ray_serve
    client = ServeLLMClient(handle, config.llm, timeout_s=0.05, stage="timeout-test",
                            timeout_retries=1)
    (env,) = _envs(client, [f"Describe a lighthouse at {time.time_ns()}."])  # never cached
    start = time.monotonic()
    _, reward, _, _, info = env.step(0)
    assert time.monotonic() - start < 30
    assert info["failure"] == TIMEOUT and reward == 0.0
    totals = client.ledger.totals(stage="timeout-test")
    assert totals["expert"].failures == 1
