"""The LLM deployment: Ray Serve replicas serving the expert and reviewer roles.

Requests from every caller (all env runners on all nodes, generation tasks, HTTP clients) reach
a replica one by one and are grouped by `@serve.batch` into engine batches, of which a replica
runs `max_concurrent_batches` per kind at once (more than 1 only for engines that batch requests
themselves, a vLLM server or its simulation: `ServeConfig`). Each replica runs an
`LLMClient` over its engines whose content-addressed cache and query ledger are the run's store
actor (`teamsrl.serving.store`, the files' only writer): a cache lookup for a batch only when
the store holds some of its keys (the replica knows which: `StoreClient`), one commit of the
batch's ledger row and responses before the replica answers. So with any number of
replicas on any nodes every caller shares one cache and one ledger. An OpenAI-compatible
`POST /v1/chat/completions` route serves outside clients from the same replicas (model = a role
name or the role's model id); `stream: true` gets server-sent events in OpenAI's chunk format,
the whole text in one content chunk (a replica generates whole completions in batches, so there
is nothing to send token by token).

    from teamsrl.serving.deployment import deploy
    handle = deploy(config.llm, config.serving, run_dir)   # ray.init() first; the app's handle
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse
from teamsrl.serving.store import NAMESPACE, StorePaths, start_store, store_name, store_paths

api = FastAPI(title="teamsrl LLM", description="expert and reviewer roles of teamsrl")


# Defined before the class: `serve.ingress` pickles the routes when the class is decorated.
def _openai_error(status: int, message: str) -> JSONResponse:
    """An error body in OpenAI's shape, so OpenAI clients show the message."""
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def _sse(completion: dict, include_usage: bool) -> StreamingResponse:
    """A finished chat completion as OpenAI `chat.completion.chunk` server-sent events: the
    role, the text, the finish reason, the usage when asked for, then `[DONE]`."""
    head = {k: completion[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"}
    choice = completion["choices"][0]
    deltas = [({"role": "assistant", "content": ""}, None),
              ({"content": choice["message"]["content"]}, None),
              ({}, choice["finish_reason"])]
    chunks = [head | {"choices": [{"index": 0, "delta": d, "finish_reason": f}]}
              for d, f in deltas]
    if include_usage:
        chunks.append(head | {"choices": [], "usage": completion["usage"]})
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(events), media_type="text/event-stream")


class _CountingEngine:
    """A role's engine as the replica's `stats` sees it: requests run, calls running now and
    the most that ever ran at once (calls entered, whatever the engine does inside)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.model_id = engine.model_id
        self.requests: Counter[str] = Counter()  # kind (chat, score) -> requests run
        self.running = 0
        self.running_peak = 0
        self._lock = threading.Lock()

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """The engine's `generate`, counted."""
        return self._counted("chat", self.engine.generate, requests)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """The engine's `score`, counted."""
        return self._counted("score", self.engine.score, requests)

    def count_tokens(self, text: str) -> int:
        """The engine's tokenizer."""
        return self.engine.count_tokens(text)

    def _counted(self, kind: str, run, requests: list) -> list:
        with self._lock:
            self.running += 1
            self.running_peak = max(self.running_peak, self.running)
        try:
            out = run(requests)
            with self._lock:
                self.requests[kind] += len(requests)
            return out
        finally:
            with self._lock:
                self.running -= 1


@serve.deployment
@serve.ingress(api)
class LLMServer:
    """Serves `chat` and `score` per role through one cached, ledgered `LLMClient`."""

    def __init__(self, llm_config: dict, store: str, store_paths: dict, stage: str,
                 max_batch_size: int, batch_wait_timeout_s: float,
                 max_concurrent_batches: int, cache_sync_s: float,
                 store_channel: str) -> None:
        import ray

        from teamsrl.llm.client import LLMClient, build_engines
        from teamsrl.llm.config import LLMConfig
        from teamsrl.serving.store import StoreClient

        config = LLMConfig.model_validate(llm_config)
        engines = {r: _CountingEngine(e) for r, e in build_engines(config).items()}
        actor = ray.get_actor(store, namespace=NAMESPACE)
        # The store's files are part of the deployment's arguments: a replica that finds a
        # store serving other files refuses to start (deploy() deletes an app deployed for
        # another run folder before replacing its store, so this is a guard, not the fix).
        serving = ray.get(actor.info.remote())["paths"]
        if serving != store_paths:
            raise RuntimeError(f"store {store!r} serves {serving}, this replica was deployed "
                               f"for {store_paths}")
        shared = StoreClient(actor, stage, sync_s=cache_sync_s, channel=store_channel)
        self.client = LLMClient(engines, cache=shared if config.cache.enabled else None,
                                ledger=shared, specs={"expert": config.expert,
                                                      "reviewer": config.reviewer})
        # Batch handlers made per replica: @serve.batch fixes max_concurrent_batches when it
        # decorates (only the size and the wait have setters). Each builds its batch queue on
        # its first request, in the replica's event loop.
        batched = serve.batch(max_batch_size=max_batch_size,
                              batch_wait_timeout_s=batch_wait_timeout_s,
                              max_concurrent_batches=max_concurrent_batches)
        self._chat_batched = batched(self._chat_batch)
        self._score_batched = batched(self._score_batch)
        self.batch_sizes: Counter[int] = Counter()
        # Engine calls block, so they run in threads: one for every batch that may run at once
        # (chat and score, each up to max_concurrent_batches). Not asyncio.to_thread: its
        # default pool has os.cpu_count() + 4 threads (6 on 2 cores), which silently capped
        # max_concurrent_batches there.
        self._pool = ThreadPoolExecutor(max_workers=2 * max_concurrent_batches,
                                        thread_name_prefix="teamsrl-batch")

    # -------------------------------------------------------------- handle API
    async def chat(self, role: str, request: ChatRequest, stage: str | None = None,
                   node: str = "") -> ChatResponse:
        """One chat completion; batched with whatever else is waiting. `node` is the caller's
        Ray node id, for the per-node ledger."""
        self.client.engine(role)  # unknown role: fail this caller only
        return await self._chat_batched((role, request, stage, node))

    async def score(self, role: str, request: ScoreRequest, stage: str | None = None,
                    node: str = "") -> ScoreResponse:
        """One scoring request; batched with whatever else is waiting."""
        self.client.engine(role)
        return await self._score_batched((role, request, stage, node))

    async def ledger_totals(self, stage: str | None = None) -> dict[str, dict]:
        """Per-role ledger totals (all callers of all replicas), optionally of one stage."""
        totals = await asyncio.to_thread(self.client.ledger.totals, stage=stage)
        return {r: t.as_dict() for r, t in totals.items()}

    async def record_failures(self, role: str, kind: str, n: int, stage: str | None = None,
                              node: str = "") -> None:
        """Count `n` requests a caller dropped after timing out (`failures` in the ledger)."""
        await asyncio.to_thread(self.client.ledger.record, role, kind, queries=0, failures=n,
                                stage=stage, node=node)

    async def ledger_by_node(self, stage: str | None = None) -> dict[str, int]:
        """Queries per calling Ray node."""
        return await asyncio.to_thread(self.client.ledger.queries_by_node, stage)

    def stats(self) -> dict[str, Any]:
        """This replica's counters: how full its batches were ({batch size: count}), the
        requests its engines ran per role and kind (cache misses; counted in the engine calls,
        not from the ledger), engine calls running now, the most calls each role's engine ran
        at once (above 1 only when batches overlap: chat beside score, or
        `max_concurrent_batches` > 1), the cache lookups it sent to the store or skipped (no
        key known to be cached: `StoreClient`), its process id and Ray node."""
        import ray

        return {"batch_sizes": dict(self.batch_sizes), "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(),
                "engine_requests": {r: dict(e.requests) for r, e in self.client.engines.items()},
                "engine_running": sum(e.running for e in self.client.engines.values()),
                "engine_running_peak": {r: e.running_peak
                                        for r, e in self.client.engines.items()},
                "store_lookups": dict(self.client.ledger.lookups)}

    def roles(self) -> dict[str, str]:
        """Role -> model id."""
        return {r: self.client.engine(r).model_id for r in self.client.roles}

    async def _chat_batch(self, items: list[tuple]) -> list[ChatResponse]:
        return await self._engine_batch(items, self.client.chat)

    async def _score_batch(self, items: list[tuple]) -> list[ScoreResponse]:
        return await self._engine_batch(items, self.client.score)

    async def _engine_batch(self, items: list[tuple], call) -> list:
        # Counted here, in the event loop: batches running at once in threads never race on it.
        self.batch_sizes[len(items)] += 1
        run = functools.partial(contextvars.copy_context().run, self._run, items, call)
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def _run(self, items: list[tuple], call) -> list:
        """Group a batch by (role, stage, node); each group is one client call."""
        out: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (role, _, stage, node) in enumerate(items):
            groups.setdefault((role, stage, node), []).append(i)
        for (role, stage, node), idx in groups.items():
            responses = call(role, [items[i][1] for i in idx], stage=stage, node=node)
            for i, resp in zip(idx, responses, strict=True):
                out[i] = resp
        return out

    # ---------------------------------------------------------- OpenAI route
    @api.post("/v1/chat/completions")
    async def openai_chat(self, body: dict):
        """OpenAI chat-completions: `model` is a role name or the role's model id; `stream`
        answers with server-sent events."""
        role = self._role_of(body.get("model", "expert"))
        if role is None:
            return _openai_error(404, f"model {body.get('model')!r}: expected one of "
                                 f"{self.client.roles} or their model ids")
        params = {k: body[k] for k in ("temperature", "top_p", "max_tokens", "seed")
                  if body.get(k) is not None}
        stop = body.get("stop") or ()
        try:
            request = ChatRequest(messages=tuple(body.get("messages") or ()),
                                  stop=(stop,) if isinstance(stop, str) else tuple(stop), **params)
        except (TypeError, ValueError) as e:
            return _openai_error(400, str(e))
        resp = await self.chat(role, request, stage="http")
        completion = {
            "id": f"chatcmpl-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.client.engine(role).model_id,
            "choices": [{"index": 0, "finish_reason": resp.finish_reason,
                         "message": {"role": "assistant", "content": resp.text}}],
            "usage": {"prompt_tokens": resp.prompt_tokens,
                      "completion_tokens": resp.completion_tokens,
                      "total_tokens": resp.prompt_tokens + resp.completion_tokens},
        }
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _sse(completion, include_usage=usage)
        return completion

    @api.get("/v1/models")
    async def openai_models(self) -> dict:
        """The roles served, as OpenAI model entries."""
        return {"object": "list", "data": [{"id": r, "object": "model", "owned_by": m}
                                           for r, m in self.roles().items()]}

    def _role_of(self, model: str) -> str | None:
        for role in self.client.roles:
            if model in (role, self.client.engine(role).model_id):
                return role
        return None


def deploy(llm_config, serve_config, run_dir: str | Path, stage: str = "default"):
    """Start Serve (HTTP on `serve_config.http_host`), the run's cache-and-ledger store (which
    must see this process's run folder: `SharedStorageError` otherwise) and the LLM app;
    returns the app's handle, sending requests over `serve_config.transport`."""
    serve.start(http_options={"host": serve_config.http_host, "port": serve_config.http_port})
    paths = StorePaths.of(llm_config, run_dir)
    if store_paths(serve_config.app_name) not in (None, asdict(paths)):
        # deployed for another run folder: its replicas hold that run's store, which
        # start_store replaces; none of them may answer a request of this run
        serve.delete(serve_config.app_name)
    start_store(serve_config.app_name, paths)
    app = LLMServer.options(
        num_replicas=serve_config.num_replicas,
        max_ongoing_requests=serve_config.max_ongoing_requests,
        ray_actor_options={"num_cpus": serve_config.num_cpus,
                           "num_gpus": serve_config.num_gpus,
                           "resources": dict(serve_config.resources)},
    ).bind(llm_config.model_dump(mode="json"), store_name(serve_config.app_name),
           asdict(paths), stage,
           serve_config.max_batch_size, serve_config.batch_wait_timeout_s,
           serve_config.max_concurrent_batches, serve_config.cache_sync_s,
           serve_config.store_channel)
    return with_transport(
        serve.run(app, name=serve_config.app_name, route_prefix=serve_config.route_prefix),
        serve_config.transport)


def with_transport(handle, transport: str):
    """`handle` sending its requests the way `ServeConfig.transport` names: 'grpc' (Serve's
    interdeployment gRPC: `_by_reference=False`) or 'actor' (Ray actor calls)."""
    if transport not in ("grpc", "actor"):
        raise ValueError(f"serving.transport = {transport!r}: expected 'grpc' or 'actor'")
    return handle.options(_by_reference=transport == "actor")
