"""`LlamaCppEngine` (the optional llama.cpp engine) against the embedded SmolLM2 GGUF: the same
batch-invariance and seed contract as the transformers engine, the same prompts, scores close to
the transformers engine's, and a cache that never answers one engine with the other's text.

Skipped where llama-cpp-python is not installed (CI does not install the extra); the
missing-extra message is checked everywhere.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from teamsrl.llm.cache import ResponseCache
from teamsrl.llm.client import LLMClient, build_engines
from teamsrl.llm.config import LLMConfig, ModelSpec
from teamsrl.llm.embedded import SMOLLM2_ID
from teamsrl.llm.engine import LLMEngine
from teamsrl.llm.ledger import QueryLedger
from teamsrl.llm.schema import ChatRequest, ScoreRequest

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (optional extra: pip install 'teamsrl[llamacpp]')")

QUESTIONS = [
    "Write a haiku about the sea.", "Name three prime numbers.", "Explain photosynthesis briefly.",
    "What is 2+2?", "Give a synonym for happy.", "Translate 'cat' to French.",
    "List two colours.", "Describe a dog in one sentence.",
]
SCORE_PAIRS = [
    ScoreRequest(messages=[{"role": "user", "content": "What is the capital of France? One word."}],
                 candidates=("Paris", "Banana")),
    ScoreRequest(prompt="The first three letters of the alphabet are A, B,",
                 candidates=(" C", " Q")),
    ScoreRequest(messages=[{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
                 candidates=("Yes", "No", "Yes, the sky is blue on a clear day.")),
]


def _requests(max_tokens: int = 24) -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": q}], temperature=0.7, top_p=0.95,
                        seed=100 + i, max_tokens=max_tokens) for i, q in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def llamacpp_engine():
    from teamsrl.llm.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(SMOLLM2_ID)
    yield engine
    engine.close()


def test_a_missing_extra_names_the_extra_to_install(monkeypatch):
    from teamsrl.llm.llamacpp_engine import LlamaCppEngine

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises
    with pytest.raises(ImportError, match=r"pip install 'teamsrl\[llamacpp\]'"):
        LlamaCppEngine(SMOLLM2_ID)


def test_the_sampler_picks_the_transformers_engines_token():
    import numpy as np
    import torch

    from teamsrl.llm.llamacpp_engine import sample_token
    from teamsrl.llm.transformers_engine import _RowGumbel

    rng = np.random.default_rng(0)
    not_argmax = 0
    for case in range(60):
        # peaked like a language model's logits: a few plausible tokens, a long tail
        logits = (rng.standard_normal(49152) * 2.0).astype(np.float32)
        logits[rng.integers(0, 49152, 5)] += rng.uniform(6.0, 14.0, 5).astype(np.float32)
        req = ChatRequest(messages=[{"role": "user", "content": "x"}], seed=case % 7,
                          temperature=[0.0, 0.3, 0.7, 1.0, 1.5][case % 5],
                          top_p=[0.5, 0.9, 0.95, 1.0][case % 4])
        step = case % 11
        ref = _RowGumbel([req], prompt_len=3)(torch.empty((1, 3 + step)),
                                             torch.from_numpy(logits.copy())[None])
        token = sample_token(logits, req, step)
        assert token == int(ref.argmax(-1)), (case, req.temperature, req.top_p)
        not_argmax += token != int(np.argmax(logits))
    assert not_argmax >= 5  # the noise matters: not the argmax every time


@needs_llama_cpp
def test_a_request_gives_the_same_text_alone_in_a_batch_and_after_others(llamacpp_engine):
    assert isinstance(llamacpp_engine, LLMEngine)
    batch = llamacpp_engine.generate(_requests())
    assert len(batch) == 8 and all(r.text for r in batch)
    assert len({r.text for r in batch}) == 8
    for i in (0, 5):
        (alone,) = llamacpp_engine.generate([_requests()[i]])
        assert (alone.text, alone.completion_tokens) == (batch[i].text, batch[i].completion_tokens)
    # after a longer, different request has filled the KV cache, the first request again
    llamacpp_engine.generate([_requests(max_tokens=40)[7]])
    (again,) = llamacpp_engine.generate([_requests()[0]])
    assert again.text == batch[0].text


@needs_llama_cpp
def test_sampling_depends_on_the_seed_and_greedy_does_not(llamacpp_engine):
    msgs = [{"role": "user", "content": "Invent a name for a new colour."}]

    def text(seed: int, temperature: float) -> str:
        req = ChatRequest(messages=msgs, temperature=temperature, seed=seed, max_tokens=16)
        return llamacpp_engine.generate([req])[0].text

    assert text(3, 1.0) == text(3, 1.0)
    assert len({text(s, 1.0) for s in range(4)}) >= 3
    assert len({text(s, 0.0) for s in range(2)}) == 1


@needs_llama_cpp
def test_budgets_stop_strings_and_prompt_counts_match_the_transformers_engine(
        llamacpp_engine, smollm2_engine):
    reqs = _requests(max_tokens=24)
    short = ChatRequest(messages=reqs[0].messages, temperature=0.7, seed=reqs[0].seed, max_tokens=5)
    out = llamacpp_engine.generate([short, reqs[1]])
    assert out[0].completion_tokens == 5 and out[0].finish_reason == "length"
    assert out[1].completion_tokens <= 24
    full = llamacpp_engine.generate([reqs[0]])[0].text
    assert full.startswith(out[0].text)
    cut = ChatRequest(messages=reqs[0].messages, temperature=0.7, seed=reqs[0].seed,
                      max_tokens=24, stop=(full.split()[2],))
    stopped = llamacpp_engine.generate([cut])[0]
    assert stopped.finish_reason == "stop" and full.startswith(stopped.text)
    assert len(stopped.text) < len(full)
    # the same tokenizer and chat template: the same prompt, token for token
    reference = smollm2_engine.generate([reqs[1]])[0]
    assert out[1].prompt_tokens == reference.prompt_tokens
    text = "Rewrite: explain entropy to a ten-year-old, in two sentences."
    assert llamacpp_engine.count_tokens(text) == smollm2_engine.count_tokens(text)


@needs_llama_cpp
def test_greedy_texts_mostly_match_the_transformers_engine(llamacpp_engine, smollm2_engine):
    reqs = [ChatRequest(messages=r.messages, temperature=0.0, seed=0, max_tokens=16)
            for r in _requests()]
    ours = [r.text for r in llamacpp_engine.generate(reqs)]
    theirs = [r.text for r in smollm2_engine.generate(reqs)]
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    # measured 5 of 8 identical (logits differ a little, and one flipped token changes the
    # rest); a wrong prompt or template would match none
    assert same >= 4, list(zip(ours, theirs, strict=True))


@needs_llama_cpp
def test_scores_rank_like_and_stay_close_to_the_transformers_engine(llamacpp_engine,
                                                                    smollm2_engine):
    ours = llamacpp_engine.score(SCORE_PAIRS)
    theirs = smollm2_engine.score(SCORE_PAIRS)
    a, b, _ = ours
    assert a.logprobs[0] > a.logprobs[1] and a.probabilities()[0] > 0.9
    assert b.logprobs[0] > b.logprobs[1]
    for mine, ref in zip(ours, theirs, strict=True):
        assert (mine.num_tokens, mine.prompt_tokens) == (ref.num_tokens, ref.prompt_tokens)
        assert all(lp < 0 for lp in mine.logprobs)
        # Q4_1 kernels with 8-bit activations vs de-quantised float32: close, not equal
        assert mine.logprobs == pytest.approx(ref.logprobs, abs=0.5)
    # scored alone, the same numbers as inside the batch (each request from an empty cache)
    assert llamacpp_engine.score([SCORE_PAIRS[2]])[0].logprobs == ours[2].logprobs


@needs_llama_cpp
def test_a_transformers_cache_never_answers_the_llamacpp_engine(llamacpp_engine, smollm2_engine,
                                                               tmp_path):
    req = _requests(max_tokens=8)[:1]

    def client(engine):
        return LLMClient({"expert": engine}, ResponseCache(tmp_path / "cache.sqlite"),
                         QueryLedger(tmp_path / "ledger.sqlite"))

    first = client(smollm2_engine)
    first.chat("expert", req)
    first.close()
    second = client(llamacpp_engine)
    (resp,) = second.chat("expert", req)
    assert not resp.cached
    assert second.ledger.session_totals()["expert"].queries == 1
    (again,) = second.chat("expert", req)
    assert again.cached and again.text == resp.text
    second.close()


@needs_llama_cpp
def test_roles_with_the_same_llamacpp_model_share_one_engine():
    spec = ModelSpec(engine="llamacpp", max_tokens=8)
    engines = build_engines(LLMConfig(expert=spec, reviewer=spec.model_copy(
        update={"temperature": 0.0})))
    assert engines["expert"] is engines["reviewer"]
    assert engines["expert"].model_id == f"llamacpp:{SMOLLM2_ID}"
    engines["expert"].close()
