"""The LLM layer against the real embedded SmolLM2-135M-Instruct (cache off unless stated)."""

from __future__ import annotations

import pytest

from teamsrl.llm.cache import ResponseCache
from teamsrl.llm.client import LLMClient
from teamsrl.llm.ledger import QueryLedger
from teamsrl.llm.schema import ChatRequest, ScoreRequest

QUESTIONS = [
    "Write a haiku about the sea.", "Name three prime numbers.", "Explain photosynthesis briefly.",
    "What is 2+2?", "Give a synonym for happy.", "Translate 'cat' to French.",
    "List two colours.", "Describe a dog in one sentence.",
]


def _requests(max_tokens: int = 24) -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": q}], temperature=0.7, top_p=0.95,
                        seed=100 + i, max_tokens=max_tokens) for i, q in enumerate(QUESTIONS)]


def test_a_request_gives_the_same_text_alone_and_in_a_batch_of_8(smollm2_engine):
    batch = smollm2_engine.generate(_requests())
    assert len(batch) == 8 and all(r.text.strip() for r in batch)
    assert len({r.text for r in batch}) == 8
    for i in (0, 5):
        (alone,) = smollm2_engine.generate([_requests()[i]])
        assert alone.text == batch[i].text
        assert alone.completion_tokens == batch[i].completion_tokens


def test_texts_and_a_short_score_do_not_depend_on_the_thread_count(smollm2_engine, monkeypatch):
    """The thread governor (teamsrl.cpu) changes torch's threads with the load: that must change
    no text, nor the score of a short context (each pass padded to 16 token rows for it). Longer
    contexts' scores may move in their last bits with the threads on some CPUs (an Intel Xeon
    with AVX-512: benchmarks/score_invariance.py), which is why floats are compared to a
    tolerance elsewhere (tests/golden_run.py)."""
    import torch

    monkeypatch.setattr(smollm2_engine, "governor", None)  # the test sets the threads itself
    before = torch.get_num_threads()
    score = [ScoreRequest(prompt="The capital of France is", candidates=(" Paris", " Rome"))]
    seen = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            seen[threads] = ([r.text for r in smollm2_engine.generate(_requests(max_tokens=32))]
                             + [smollm2_engine.generate(_requests(max_tokens=32)[:1])[0].text],
                             smollm2_engine.score(score)[0].logprobs)
    finally:
        torch.set_num_threads(before)
    assert seen[1] == seen[2]


def test_sampling_depends_on_the_seed_and_greedy_does_not(smollm2_engine):
    msgs = [{"role": "user", "content": "Invent a name for a new colour."}]
    texts = {smollm2_engine.generate([ChatRequest(messages=msgs, temperature=1.0, seed=s,
                                                  max_tokens=16)])[0].text for s in range(4)}
    assert len(texts) >= 2
    greedy = {smollm2_engine.generate([ChatRequest(messages=msgs, temperature=0.0, seed=s,
                                                   max_tokens=16)])[0].text for s in range(2)}
    assert len(greedy) == 1


def test_max_tokens_is_respected_per_row(smollm2_engine):
    reqs = _requests(max_tokens=24)
    short = ChatRequest(messages=reqs[0].messages, temperature=0.7, seed=reqs[0].seed, max_tokens=5)
    out = smollm2_engine.generate([short, reqs[1]])
    assert out[0].completion_tokens <= 5 and out[1].completion_tokens <= 24
    assert out[0].finish_reason == "length"
    # the 5-token row is a prefix of the same request with a larger budget
    assert smollm2_engine.generate([reqs[0]])[0].text.startswith(out[0].text)


def test_score_ranks_a_planted_right_continuation_above_a_wrong_one(smollm2_engine):
    chat = ScoreRequest(
        messages=[{"role": "user", "content": "What is the capital of France? One word."}],
        candidates=("Paris", "Banana"))
    raw = ScoreRequest(prompt="The first three letters of the alphabet are A, B,",
                       candidates=(" C", " Q"))
    a, b = smollm2_engine.score([chat, raw])
    assert a.logprobs[0] > a.logprobs[1] and a.probabilities()[0] > 0.9
    assert b.logprobs[0] > b.logprobs[1]
    assert all(lp < 0 for lp in a.logprobs + b.logprobs)
    # one request scored alone gives the same numbers as inside the batch
    (a_alone,) = smollm2_engine.score([chat])
    assert a_alone.logprobs == pytest.approx(a.logprobs, abs=1e-4)


def test_score_equals_one_full_pass_per_candidate(smollm2_engine):
    """The engine scores each context once and the candidates' later tokens on its cache: every
    candidate's sum equals the plain computation (context + candidate in one forward pass, the
    candidate's tokens' log-probs summed), for candidates of 1-4 tokens, contexts of different
    lengths and different candidate counts in one batch."""
    import torch

    from teamsrl.llm.transformers_engine import score_ids

    requests = [
        ScoreRequest(prompt="The first three letters of the alphabet are A, B,",
                     candidates=(" C", " Q", " Banana", " C D E")),
        ScoreRequest(messages=[{"role": "user", "content": "Is the sky blue? Yes or No."}],
                     candidates=("Yes", "No, it is green")),
        ScoreRequest(prompt="Two plus two is", candidates=(" four",)),
        ScoreRequest(prompt="Paris is the capital of a country in Europe, which is",
                     candidates=(" France", " not Spain", " the United Kingdom")),
    ]
    got = smollm2_engine.score(requests)
    model, tok = smollm2_engine.model, smollm2_engine.tokenizer
    for req, resp in zip(requests, got, strict=True):
        ctx, cands = score_ids(tok, req, smollm2_engine.context_length)
        want = []
        for cand in cands:
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([ctx + cand])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            want.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cand)))
        assert resp.num_tokens == tuple(len(c) for c in cands)
        assert resp.prompt_tokens == len(ctx)
        assert resp.logprobs == pytest.approx(want, abs=1e-4), req


def test_cache_on_rerun_costs_zero_queries_and_ledger_equals_calls(smollm2_engine, tmp_path):
    sent = {"n": 0}
    real_generate = smollm2_engine.generate

    class Counting:
        model_id = smollm2_engine.model_id

        def generate(self, requests):
            sent["n"] += len(requests)
            return real_generate(requests)

        def score(self, requests):
            return smollm2_engine.score(requests)

        def count_tokens(self, text):
            return smollm2_engine.count_tokens(text)

    def client():
        return LLMClient({"expert": Counting()}, ResponseCache(tmp_path / "cache.sqlite"),
                         QueryLedger(tmp_path / "ledger.sqlite"))

    first_client = client()
    first = first_client.chat("expert", _requests(16)[:4])
    first_client.close()
    second_client = client()
    second = second_client.chat("expert", _requests(16)[:4])
    assert [r.text for r in first] == [r.text for r in second]
    assert all(r.cached for r in second) and sent["n"] == 4
    assert second_client.ledger.session_totals()["expert"].queries == 0
    totals = second_client.ledger.totals()["expert"]
    assert (totals.queries, totals.cache_hits) == (sent["n"], 4)
    assert totals.completion_tokens == sum(r.completion_tokens for r in first)
    second_client.close()


def test_evolve_command_twice_costs_one_query_then_one_hit(tmp_path, capsys):
    from teamsrl.cli import main

    args = ["evolve", "--instruction", "Write a poem about the sea.", "--action",
            "add_constraints", "--set", f"run_dir={tmp_path}", "--set", "llm.expert.max_tokens=32"]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()
    assert main(args) == 0
    second = capsys.readouterr().out.splitlines()
    assert first[0] == second[0] and first[0].strip()
    assert "ledger (this call): expert: 1 query, 0 cache hits" in first[1]
    assert "ledger (this call): expert: 0 queries, 1 cache hit," in second[1]
    assert "ledger (run total): expert: 1 query, 1 cache hit," in second[2]


def test_evolve_command_rejects_bad_input_before_loading(tmp_path, capsys):
    from teamsrl.cli import main

    assert main(["evolve", "--instruction", "x", "--action", "fly",
                 "--set", f"run_dir={tmp_path}"]) == 2
    assert "unknown action 'fly'" in capsys.readouterr().err
    assert main(["evolve", "--instruction", "  ", "--action", "breadth"]) == 2
    assert "expected a non-empty instruction" in capsys.readouterr().err
    assert main(["evolve", "--instruction", "x", "--action", "breadth",
                 "--set", "llm.expert.engine=vllm", "--set", f"run_dir={tmp_path}"]) == 2
    assert "engine = 'vllm': expected base_url" in capsys.readouterr().err
