"""`ServeLLMClient`: the `LLMClient` interface over a Ray Serve deployment handle.

Env runners and generation workers use it instead of a local engine: each request goes to the
deployment separately (no HTTP hop) and all of a batch's requests are in flight before the first
result is awaited, so the replica's `@serve.batch` sees them together. The cache and the ledger
live in the deployment; `ledger.totals()` asks it. Token counting (for prompt budgets) uses the
role's tokenizer, loaded locally.

Timeouts: a request unanswered after `timeout_s` (or lost with a replica that died while running
it) is sent again up to `timeout_retries` times; then it is dropped, counted as a failure in the
shared ledger, and the call raises `LLMTimeoutError` carrying the answers that did arrive
(`envs.instruction_mdp` turns the dropped ones into failed steps). A caller never waits more
than `(1 + timeout_retries) x timeout_s` per call.
"""

from __future__ import annotations

import logging
import time
from functools import cache

from teamsrl.llm.client import make_request
from teamsrl.llm.config import LLMConfig, ModelSpec
from teamsrl.llm.engine import LLMTimeoutError
from teamsrl.llm.ledger import RoleTotals
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse

log = logging.getLogger(__name__)
BOOKKEEPING_TIMEOUT_S = 30.0  # ledger reads and failure counts (not LLM requests)


class RemoteLedger:
    """Ledger totals read from the deployment (shared by every caller)."""

    def __init__(self, handle, timeout_s: float) -> None:
        self._handle = handle
        self._timeout_s = timeout_s

    def totals(self, *, stage: str | None = None) -> dict[str, RoleTotals]:
        """Per-role totals of every caller, optionally of one stage."""
        raw = self._handle.ledger_totals.remote(stage).result(timeout_s=self._timeout_s)
        return {r: RoleTotals(**{k: v for k, v in t.items() if k != "hit_rate"})
                for r, t in raw.items()}

    def queries_by_node(self, stage: str | None = None) -> dict[str, int]:
        """Queries per calling Ray node id."""
        return self._handle.ledger_by_node.remote(stage).result(timeout_s=self._timeout_s)


class ServeLLMClient:
    """The `LLMService` interface (chat, score, request, count_tokens, stage), served remotely."""

    def __init__(self, handle, llm_config: LLMConfig, timeout_s: float = 300.0,
                 stage: str | None = None, timeout_retries: int = 1) -> None:
        self.handle = handle
        self.specs: dict[str, ModelSpec] = {"expert": llm_config.expert,
                                            "reviewer": llm_config.reviewer}
        self.timeout_s = timeout_s
        self.timeout_retries = timeout_retries
        self.stage = stage
        # bookkeeping calls wait on a busy replica too: not less than 30 s, whatever timeout_s is
        self.ledger = RemoteLedger(handle, max(timeout_s, BOOKKEEPING_TIMEOUT_S))
        self.node = _node_id()

    @classmethod
    def connect(cls, app_name: str, llm_config: LLMConfig, transport: str = "grpc",
                **kwargs) -> ServeLLMClient:
        """Attach to a running app by name (from any process of the Ray cluster), sending
        requests over `transport` (`ServeConfig.transport`)."""
        from ray import serve

        from teamsrl.serving.deployment import with_transport

        return cls(with_transport(serve.get_app_handle(app_name), transport), llm_config,
                   **kwargs)

    @property
    def roles(self) -> list[str]:
        """The roles served."""
        return sorted(self.specs)

    def spec(self, role: str) -> ModelSpec:
        """The role's model spec."""
        try:
            return self.specs[role]
        except KeyError:
            raise ValueError(f"role {role!r}: expected one of {self.roles}") from None

    def request(self, role: str, messages: list[dict[str, str]], seed: int, **overrides
                ) -> ChatRequest:
        """A `ChatRequest` with the role's default sampling parameters."""
        return make_request(self.spec(role), messages, seed, **overrides)

    def chat(self, role: str, requests: list[ChatRequest], stage: str | None = None
             ) -> list[ChatResponse]:
        """All requests in flight at once, then gathered in order (`LLMTimeoutError` when some
        got no answer within `timeout_s` after `timeout_retries` retries)."""
        return self._gather(self.handle.chat, "chat", role, requests, stage)

    def score(self, role: str, requests: list[ScoreRequest], stage: str | None = None
              ) -> list[ScoreResponse]:
        """All scoring requests in flight at once, then gathered in order."""
        return self._gather(self.handle.score, "score", role, requests, stage)

    def _gather(self, method, kind: str, role: str, requests: list, stage: str | None) -> list:
        self.spec(role)
        stage = stage or self.stage
        out: list = [None] * len(requests)
        todo = list(range(len(requests)))
        lost = (TimeoutError, *_replica_lost_errors())
        for _ in range(1 + self.timeout_retries):
            pending = {i: method.remote(role, requests[i], stage, self.node) for i in todo}
            deadline = time.monotonic() + self.timeout_s  # every request is in flight from here
            todo = []
            for i, p in pending.items():
                try:
                    out[i] = p.result(timeout_s=max(0.0, deadline - time.monotonic()))
                except lost as e:  # no answer in time, or its replica died while running it
                    if isinstance(e, TimeoutError):
                        p.cancel()  # best effort: frees the replica's queue if never started
                    else:
                        log.warning("%s %s request lost with its replica (%s); sending it "
                                    "again", role, kind, type(e).__name__)
                    todo.append(i)
            if not todo:
                return out
        self._record_failures(role, kind, len(todo), stage)
        raise LLMTimeoutError(role, kind, out, self.timeout_s, 1 + self.timeout_retries)

    def _record_failures(self, role: str, kind: str, n: int, stage: str | None) -> None:
        """Count dropped requests in the shared ledger (a hung replica may not answer this
        either: then only the log has it)."""
        try:
            self.handle.record_failures.remote(role, kind, n, stage, self.node).result(
                timeout_s=BOOKKEEPING_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - the caller's TimeoutError matters more
            log.warning("could not count %d timed-out %s %s request(s) in the ledger: %s", n,
                        role, kind, e)

    def count_tokens(self, role: str, text: str) -> int:
        """Tokens of `text` for the role's tokenizer (loaded here once)."""
        return len(_tokenizer(self.spec(role).model)(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        """Nothing to close: the deployment owns the files."""


def _replica_lost_errors() -> tuple[type[BaseException], ...]:
    """What a handle raises for a request whose replica died (Serve replaces the replica; a
    request it had not started is re-routed by Serve itself, one it was running is not)."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    return RayActorError, ActorUnavailableError


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


@cache
def _tokenizer(model_id: str):
    from pathlib import Path

    from transformers import AutoTokenizer

    from teamsrl.llm.embedded import resolve_model_path

    path = resolve_model_path(model_id)
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return AutoTokenizer.from_pretrained(Path(path))
