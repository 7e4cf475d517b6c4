"""The client's cache and ledger bookkeeping.

No model here: the properties tested are counts, not text, so a deterministic engine is enough.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from teamsrl.llm.cache import ResponseCache
from teamsrl.llm.client import LLMClient
from teamsrl.llm.ledger import QueryLedger, format_totals
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse


class CountingEngine:
    """Deterministic stand-in: the text is a digest of the request; it counts what it receives."""

    model_id = "counting"

    def __init__(self) -> None:
        self.generated = 0
        self.scored = 0

    def generate(self, requests):
        self.generated += len(requests)
        return [ChatResponse(hashlib.sha1(repr(r).encode()).hexdigest(), 10, 5) for r in requests]

    def score(self, requests):
        self.scored += len(requests)
        return [ScoreResponse(tuple(-float(len(c)) for c in r.candidates),
                              tuple(1 for _ in r.candidates), 7) for r in requests]

    def count_tokens(self, text):
        return len(text.split())


def _req(i: int, seed: int = 0) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], seed=seed)


def test_rerun_is_served_from_cache_and_ledger_counts_every_call(tmp_path):
    engine = CountingEngine()
    client = LLMClient({"expert": engine}, ResponseCache(tmp_path / "c.sqlite"),
                       QueryLedger(tmp_path / "l.sqlite"))
    first = client.chat("expert", [_req(i) for i in range(5)])
    again = client.chat("expert", [_req(i) for i in range(5)] + [_req(9)])
    assert [r.text for r in first] == [r.text for r in again[:5]]
    assert all(r.cached for r in again[:5]) and not again[5].cached
    assert engine.generated == 6  # counted independently of the ledger
    t = client.ledger.totals()["expert"]
    assert (t.queries, t.cache_hits) == (6, 5)
    assert (t.prompt_tokens, t.completion_tokens) == (60, 30)
    assert t.hit_rate == pytest.approx(5 / 11)


def test_cache_and_ledger_survive_a_new_process(tmp_path):
    """A new client on the same files (a restarted run) sends zero new queries."""
    for round_ in range(2):
        engine = CountingEngine()
        client = LLMClient({"expert": engine}, ResponseCache(tmp_path / "c.sqlite"),
                           QueryLedger(tmp_path / "l.sqlite"))
        client.chat("expert", [_req(i) for i in range(3)])
        assert engine.generated == (3 if round_ == 0 else 0)
        assert client.ledger.session_totals()["expert"].queries == (3 if round_ == 0 else 0)
        client.close()
    totals = QueryLedger(tmp_path / "l.sqlite").totals()["expert"]
    assert (totals.queries, totals.cache_hits) == (3, 3)


def test_seed_and_sampling_params_are_part_of_the_key(tmp_path):
    engine = CountingEngine()
    client = LLMClient({"expert": engine}, ResponseCache(None))
    client.chat("expert", [_req(0, seed=1), _req(0, seed=2),
                           ChatRequest(messages=[{"role": "user", "content": "q0"}],
                                       seed=1, temperature=0.1)])
    assert engine.generated == 3


def test_identical_requests_in_one_batch_are_sent_once():
    engine = CountingEngine()
    client = LLMClient({"expert": engine}, cache=None)
    out = client.chat("expert", [_req(1), _req(1), _req(2)])
    assert engine.generated == 2 and out[0].text == out[1].text
    t = client.ledger.totals()["expert"]
    assert (t.queries, t.cache_hits) == (2, 1)


def test_score_calls_are_cached_and_ledgered_per_role(tmp_path):
    engine = CountingEngine()
    client = LLMClient({"expert": engine, "reviewer": engine}, ResponseCache(None))
    req = ScoreRequest(messages=[{"role": "user", "content": "same?"}], candidates=("A", "BB"))
    a = client.score("reviewer", [req])
    b = client.score("reviewer", [req])
    assert engine.scored == 1 and a[0].logprobs == b[0].logprobs and b[0].cached
    assert client.ledger.totals()["reviewer"].queries == 1
    assert "expert" not in client.ledger.totals()
    assert a[0].probabilities()[0] > a[0].probabilities()[1]


def test_ledger_stages_and_format(tmp_path):
    ledger = QueryLedger(tmp_path / "l.sqlite", stage="train")
    ledger.record("expert", "chat", queries=2, prompt_tokens=10, completion_tokens=4, seconds=1.5)
    ledger.record("expert", "chat", queries=1, cache_hits=1, stage="generate")
    assert ledger.totals(stage="train")["expert"].queries == 2
    assert ledger.totals()["expert"].queries == 3
    line = format_totals(ledger.totals())
    assert line.startswith("expert: 3 queries, 1 cache hit,") and "10+4 tokens" in line
    assert format_totals({}) == "no LLM calls"


def test_unknown_role_names_the_known_roles():
    client = LLMClient({"expert": CountingEngine()})
    with pytest.raises(ValueError, match=r"role 'critic': expected one of \['expert'\]"):
        client.chat("critic", [_req(0)])


def test_unreadable_cache_file_is_moved_aside_not_reused(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a sqlite database" * 100)
    cache = ResponseCache(path)
    cache.put_many({"k": {"text": "v"}})
    assert cache.get_many(["k"]) == {"k": {"text": "v"}}
    aside = list(tmp_path.glob("c.sqlite.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1


def test_request_validation_names_the_field():
    with pytest.raises(ValueError, match="temperature: expected 0 <= t <= 5, got -1"):
        _ = ChatRequest(messages=[{"role": "user", "content": "x"}], temperature=-1)
    with pytest.raises(ValueError, match=r"messages\[0\].role"):
        _ = ChatRequest(messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="max_tokens: expected >= 1, got 0"):
        _ = ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=0)
    with pytest.raises(ValueError, match="exactly one of"):
        _ = ScoreRequest(candidates=("a",))
    with pytest.raises(ValueError, match="candidates"):
        _ = ScoreRequest(prompt="p", candidates=("",))


def test_openai_body_round_trip():
    req = ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m", seed=3,
                      stop=("\n",))
    body = req.to_openai()
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["stop"] == ["\n"]
    assert ChatRequest(**(body | {"stop": tuple(body["stop"])})) == req


class OneStore:
    """A cache that is also the ledger (the serving side's `StoreClient`): records each commit."""

    def __init__(self) -> None:
        self.commits: list[tuple] = []
        self.cached: dict[str, dict] = {}

    def get_many(self, keys):
        return {k: self.cached[k] for k in keys if k in self.cached}

    def commit(self, items, role, kind, **counts):
        self.commits.append((dict(items), role, kind, counts))
        self.cached.update(items)

    def record(self, role, kind, **counts):
        raise AssertionError("a store that holds both must get one commit, not a bare record")


def test_a_store_holding_cache_and_ledger_gets_each_batch_in_one_commit():
    engine, store = CountingEngine(), OneStore()
    client = LLMClient({"expert": engine}, cache=store, ledger=store)
    client.chat("expert", [_req(0), _req(1)], stage="generate")
    client.chat("expert", [_req(0), _req(2)])
    (items1, role, kind, counts1), (items2, _, _, counts2) = store.commits
    assert (role, kind, len(items1), len(items2)) == ("expert", "chat", 2, 1)
    assert (counts1["queries"], counts1["cache_hits"], counts1["stage"]) == (2, 0, "generate")
    assert (counts2["queries"], counts2["cache_hits"]) == (1, 1)
    assert engine.generated == 3


def test_the_ledger_is_written_before_the_cache(tmp_path):
    """A crash between the two writes must leave a counted query uncached, never a cached
    query uncounted: the ledger row exists by the time the cache is written."""
    order = []

    class Ledger(QueryLedger):
        def record(self, *a, **k):
            order.append("ledger")
            super().record(*a, **k)

    class Cache(ResponseCache):
        def put_many(self, items):
            order.append("cache")
            super().put_many(items)

    client = LLMClient({"expert": CountingEngine()}, Cache(None), Ledger(None))
    client.chat("expert", [_req(0)])
    assert order == ["ledger", "cache"]
