"""`LLMClient`: every LLM call of teamsrl goes through here.

Role-tagged (expert, reviewer, ...) batches go through the content-addressed cache; the misses go
to the role's engine as one batch; every call is committed to the `QueryLedger`. The engine is
injected: a `TransformersEngine` here, a Ray Serve handle on a cluster (where the cache and the
ledger live with the serving side, shared by all env runners).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path

from teamsrl.llm.cache import ResponseCache
from teamsrl.llm.config import LLMConfig, ModelSpec
from teamsrl.llm.engine import LLMEngine
from teamsrl.llm.ledger import QueryLedger
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse


class LLMClient:
    """Batched, cached, ledgered access to one engine per role (an `LLMService`)."""

    def __init__(
        self,
        engines: Mapping[str, LLMEngine],
        cache: ResponseCache | None = None,
        ledger: QueryLedger | None = None,
        specs: Mapping[str, ModelSpec] | None = None,
    ) -> None:
        if not engines:
            raise ValueError("LLMClient: expected at least one role engine, got none")
        self.engines = dict(engines)
        self.cache = cache
        self.ledger = ledger if ledger is not None else QueryLedger(None)
        self.specs = dict(specs or {})

    @property
    def roles(self) -> list[str]:
        """The roles this client serves."""
        return sorted(self.engines)

    @property
    def stage(self) -> str:
        """The stage a call records under unless it names one (the ledger's default)."""
        return self.ledger.stage

    @stage.setter
    def stage(self, value: str) -> None:
        self.ledger.stage = value

    def __deepcopy__(self, memo) -> LLMClient:
        # A client is a handle on shared engines and files (gymnasium deep-copies env kwargs).
        return self

    def engine(self, role: str) -> LLMEngine:
        """The engine of `role`; a clear error names the known roles."""
        try:
            return self.engines[role]
        except KeyError:
            raise ValueError(f"role {role!r}: expected one of {self.roles}") from None

    def spec(self, role: str) -> ModelSpec:
        """The role's model spec (defaults when the client was built without config)."""
        return self.specs.get(role) or ModelSpec(model=self.engine(role).model_id)

    def request(self, role: str, messages: list[dict[str, str]], seed: int, **overrides
                ) -> ChatRequest:
        """A `ChatRequest` with the role's default sampling parameters."""
        return make_request(self.spec(role), messages, seed, **overrides)

    def chat(self, role: str, requests: list[ChatRequest], stage: str | None = None,
             node: str = "") -> list[ChatResponse]:
        """Complete a batch for `role`: cache first, then one engine batch for the misses."""
        engine = self.engine(role)
        return self._call(role, "chat", engine.model_id, requests, engine.generate, ChatResponse,
                          lambda r: (r.prompt_tokens, r.completion_tokens), stage, node)

    def score(self, role: str, requests: list[ScoreRequest], stage: str | None = None,
              node: str = "") -> list[ScoreResponse]:
        """Candidate log-probabilities for `role`, cached like chat calls."""
        engine = self.engine(role)
        return self._call(role, "score", engine.model_id, requests, engine.score, ScoreResponse,
                          lambda r: (r.prompt_tokens, 0), stage, node)

    def count_tokens(self, role: str, text: str) -> int:
        """Tokens of `text` for the role's tokenizer."""
        return self.engine(role).count_tokens(text)

    def _call(self, role, kind, model_id, requests, run, response_type, tokens, stage, node):
        if not requests:
            return []
        keys = [r.cache_key(model_id) for r in requests]
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        out: list = [None] * len(requests)
        for i, k in enumerate(keys):
            if k in hits:
                out[i] = _from_dict(response_type, hits[k])
        todo = [i for i, o in enumerate(out) if o is None]
        # Identical requests inside one batch are sent once.
        first: dict[str, int] = {}  # key -> first request with it
        for i in todo:
            first.setdefault(keys[i], i)
        unique = list(first)
        seconds, fresh = 0.0, {}
        if unique:
            start = time.perf_counter()
            results = run([requests[first[k]] for k in unique])
            seconds = time.perf_counter() - start
            fresh = dict(zip(unique, results, strict=True))
        self._commit(role, kind, {k: asdict(v) for k, v in fresh.items()},
                     queries=len(fresh), cache_hits=len(requests) - len(fresh),
                     prompt_tokens=sum(tokens(r)[0] for r in fresh.values()),
                     completion_tokens=sum(tokens(r)[1] for r in fresh.values()),
                     seconds=seconds, stage=stage, node=node)
        for i in todo:
            out[i] = fresh[keys[i]]
        return out

    def _commit(self, role: str, kind: str, items: dict[str, dict], **counts) -> None:
        """Count an engine batch, then cache its responses: the ledger first, so a crash or a
        full disk between the two can lose a cached response (a rerun pays for it again, and
        counts it again) but never leaves a response cached that the ledger does not count
        (which a resumed run would then take as a free hit). A store that holds both (the
        serving side's `StoreClient`) commits them together in one call."""
        if self.cache is not None and self.cache is self.ledger:
            self.ledger.commit(items, role, kind, **counts)
            return
        self.ledger.record(role, kind, **counts)
        if self.cache is not None and items:
            self.cache.put_many(items)

    def close(self) -> None:
        """Close the cache and ledger files."""
        if self.cache is not None:
            self.cache.close()
        self.ledger.close()


def make_request(spec: ModelSpec, messages: list[dict[str, str]], seed: int, **overrides
                 ) -> ChatRequest:
    """A `ChatRequest` with a model spec's default sampling parameters."""
    params = {"temperature": spec.temperature, "top_p": spec.top_p, "max_tokens": spec.max_tokens}
    return ChatRequest(messages=tuple(messages), model=spec.model, seed=seed,
                       **(params | overrides))


def _from_dict(response_type, value: dict):
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return replace(response_type(**fields), cached=True)


def build_engine(spec: ModelSpec) -> LLMEngine:
    """The engine a model spec names: a local transformers or llama.cpp model, or an
    OpenAI-compatible server (vLLM behind `ray.serve.llm` on GPU clusters)."""
    if spec.engine in ("openai", "vllm"):
        from teamsrl.llm.openai_engine import OpenAIEngine

        return OpenAIEngine.from_spec(spec)
    if spec.engine == "simulated":
        from teamsrl.llm.simulated_engine import SimulatedEngine

        return SimulatedEngine.from_spec(spec)
    if spec.engine == "llamacpp":
        from teamsrl.llm.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(spec.model)
    from teamsrl.llm.transformers_engine import TransformersEngine

    return TransformersEngine(spec.model, device=spec.device, dtype=spec.dtype,
                              max_batch_size=spec.max_batch_size,
                              adaptive_threads=spec.adaptive_threads)


def build_engines(config: LLMConfig) -> dict[str, LLMEngine]:
    """The expert's and reviewer's engines: one shared engine when they use the same model."""
    engines: dict[str, LLMEngine] = {}
    loaded: dict[tuple, LLMEngine] = {}
    for role, spec in {"expert": config.expert, "reviewer": config.reviewer}.items():
        key = (spec.model, spec.engine, spec.device, spec.dtype, spec.max_batch_size,
               spec.adaptive_threads)
        if key not in loaded:
            loaded[key] = build_engine(spec)
        engines[role] = loaded[key]
    return engines


def build_client(config: LLMConfig, run_dir: str | Path, stage: str = "default") -> LLMClient:
    """Engines for the expert and reviewer (`build_engines`), the cache and the ledger, as the
    config says."""
    run_dir = Path(run_dir)
    specs = {"expert": config.expert, "reviewer": config.reviewer}
    engines = build_engines(config)
    cache = None
    if config.cache.enabled:
        cache = ResponseCache(config.cache.path or run_dir / "llm-cache.sqlite")
    ledger = QueryLedger(config.ledger_path or run_dir / "ledger.sqlite", stage=stage)
    return LLMClient(engines, cache=cache, ledger=ledger, specs=specs)
