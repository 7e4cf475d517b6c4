"""Small deterministic stand-ins shared by the reliability tests (no model, no Ray).

Their properties are about control flow (timeouts, counts, what reaches disk), never about text,
so a sleeping engine is enough (and tests/embedding_doubles.py's hashing embedder); the
text-dependent cases use the real SmolLM2 engine (`smollm2_engine` in tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

from teamsrl.llm.schema import ChatResponse, ScoreResponse


class SleepingEngine:
    """Answers at once, except a request whose text contains `hang_marker`: that one blocks
    until `release` is set (a hung server). `hang_times` limits how often each such request
    hangs (None: always), so a retry can succeed; `hang_in` picks the calls that may hang."""

    model_id = "sleeping"

    def __init__(self, hang_marker: str = "HANG", hang_times: int | None = None,
                 hang_in: tuple[str, ...] = ("generate", "score")) -> None:
        self.hang_marker = hang_marker
        self.hang_in = hang_in
        self.hang_times = hang_times
        self.release = threading.Event()
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()

    def _maybe_hang(self, text: str, call: str) -> None:
        if self.hang_marker not in text or call not in self.hang_in:
            return
        with self.lock:
            n = self.seen[text] = self.seen.get(text, 0) + 1
        if self.hang_times is None or n <= self.hang_times:
            self.release.wait(60)

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            self._maybe_hang(text, "generate")
            digest = hashlib.sha1(repr(r).encode()).hexdigest()[:8]
            out.append(ChatResponse(f"Describe topic {digest} in depth and give two examples.",
                                    10, 8))
        return out

    def score(self, requests):
        for r in requests:
            self._maybe_hang(r.messages[-1]["content"], "score")
        return [ScoreResponse((-2.0, -0.5), (1, 2), 9) for _ in requests]

    def count_tokens(self, text):
        return len(text.split())


class _Response:
    def __init__(self, future):
        self._future = future

    def result(self, timeout_s=None):
        return self._future.result(timeout=timeout_s)  # raises TimeoutError, as Serve's does

    def cancel(self):
        self._future.cancel()


class _Method:
    def __init__(self, pool, fn):
        self._pool, self._fn = pool, fn

    def remote(self, *args):
        return _Response(self._pool.submit(self._fn, *args))


class ThreadHandle:
    """A Serve `DeploymentHandle` in-process: each `.remote()` call runs on a thread against a
    real `LLMClient` (cache + ledger), with the methods `LLMServer` offers `ServeLLMClient`."""

    def __init__(self, client) -> None:
        self.client = client
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.chat = _Method(self.pool, lambda role, r, stage, node:
                            client.chat(role, [r], stage=stage, node=node)[0])
        self.score = _Method(self.pool, lambda role, r, stage, node:
                             client.score(role, [r], stage=stage, node=node)[0])
        self.record_failures = _Method(self.pool, lambda role, kind, n, stage, node:
                                       client.ledger.record(role, kind, queries=0, failures=n,
                                                            stage=stage, node=node))


class FixedReplyEngine:
    """Every chat request gets `reply`; every verdict the same log-probabilities."""

    model_id = "fixed-reply"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.generated = self.scored = 0

    def generate(self, requests):
        self.generated += len(requests)
        return [ChatResponse(self.reply, 12, len(self.reply.split()), "length")
                for _ in requests]

    def score(self, requests):
        self.scored += len(requests)
        return [ScoreResponse((-2.0, -0.5), (1, 2), 9) for _ in requests]

    def count_tokens(self, text):
        return len(text.split())
