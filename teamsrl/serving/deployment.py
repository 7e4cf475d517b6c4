"""The LLM deployment: one Ray Serve replica serving the expert and reviewer roles.

Requests from every caller (all env runners on all nodes, generation tasks, HTTP clients) reach
the replica one by one and are grouped by `@serve.batch` into engine batches. The replica owns the
`LLMClient` — engines, the content-addressed cache and the query ledger — so every caller shares
one cache and one ledger. An OpenAI-compatible `POST /v1/chat/completions` route serves outside
clients from the same replica (model = a role name or the role's model id); `stream: true` gets
server-sent events in OpenAI's chunk format, the whole text in one content chunk (the replica
generates whole completions in batches, so there is nothing to send token by token).

    from teamsrl.serving.deployment import deploy
    handle = deploy(config)   # ray.init() first; returns the app's DeploymentHandle
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse

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


@serve.deployment
@serve.ingress(api)
class LLMServer:
    """Serves `chat` and `score` per role through one cached, ledgered `LLMClient`."""

    def __init__(self, llm_config: dict, run_dir: str, stage: str, max_batch_size: int,
                 batch_wait_timeout_s: float) -> None:
        from teamsrl.llm.client import build_client
        from teamsrl.llm.config import LLMConfig

        self.client = build_client(LLMConfig.model_validate(llm_config), Path(run_dir), stage)
        for handler in (self._chat_batch, self._score_batch):
            handler.set_max_batch_size(max_batch_size)
            handler.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batch_sizes: Counter[int] = Counter()

    # -------------------------------------------------------------- handle API
    async def chat(self, role: str, request: ChatRequest, stage: str | None = None,
                   node: str = "") -> ChatResponse:
        """One chat completion; batched with whatever else is waiting. `node` is the caller's
        Ray node id, for the per-node ledger."""
        self.client.engine(role)  # unknown role: fail this caller only
        return await self._chat_batch((role, request, stage, node))

    async def score(self, role: str, request: ScoreRequest, stage: str | None = None,
                    node: str = "") -> ScoreResponse:
        """One scoring request; batched with whatever else is waiting."""
        self.client.engine(role)
        return await self._score_batch((role, request, stage, node))

    def ledger_totals(self, stage: str | None = None) -> dict[str, dict]:
        """Per-role ledger totals (all callers), optionally of one stage."""
        return {r: t.as_dict() for r, t in self.client.ledger.totals(stage=stage).items()}

    def record_failures(self, role: str, kind: str, n: int, stage: str | None = None,
                        node: str = "") -> None:
        """Count `n` requests a caller dropped after timing out (`failures` in the ledger)."""
        self.client.ledger.record(role, kind, queries=0, failures=n, stage=stage, node=node)

    def ledger_by_node(self, stage: str | None = None) -> dict[str, int]:
        """Queries per calling Ray node."""
        return self.client.ledger.queries_by_node(stage)

    def stats(self) -> dict[str, Any]:
        """How full the engine batches were: {batch size: count}."""
        return {"batch_sizes": dict(self.batch_sizes)}

    def roles(self) -> dict[str, str]:
        """Role -> model id."""
        return {r: self.client.engine(r).model_id for r in self.client.roles}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _chat_batch(self, items: list[tuple]) -> list[ChatResponse]:
        return await asyncio.to_thread(self._run, items, self.client.chat)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _score_batch(self, items: list[tuple]) -> list[ScoreResponse]:
        return await asyncio.to_thread(self._run, items, self.client.score)

    def _run(self, items: list[tuple], call) -> list:
        """Group a batch by (role, stage, node); each group is one client call."""
        self.batch_sizes[len(items)] += 1
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
    """Start Serve (HTTP on `serve_config.http_host`) and run the LLM app; returns its handle."""
    serve.start(http_options={"host": serve_config.http_host, "port": serve_config.http_port})
    app = LLMServer.options(
        num_replicas=serve_config.num_replicas,
        max_ongoing_requests=serve_config.max_ongoing_requests,
        ray_actor_options={"num_cpus": serve_config.num_cpus,
                           "num_gpus": serve_config.num_gpus,
                           "resources": dict(serve_config.resources)},
    ).bind(llm_config.model_dump(mode="json"), str(Path(run_dir).resolve()), stage,
           serve_config.max_batch_size, serve_config.batch_wait_timeout_s)
    return serve.run(app, name=serve_config.app_name, route_prefix=serve_config.route_prefix)
