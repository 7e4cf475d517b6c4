"""Configuration of the Ray Serve app that hosts the expert and reviewer roles."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Engines that queue and batch requests themselves (a vLLM server, or its latency model): a
# replica may hand them several batches at once. The others run in the replica's own process,
# one batch at a time, where concurrent batches would only contend.
SELF_BATCHING_ENGINES = ("openai", "vllm", "simulated")


class ServeConfig(BaseModel):
    """Replicas, resources, batching and the HTTP listener of the LLM app."""

    model_config = ConfigDict(extra="forbid")
    app_name: str = Field("teamsrl-llm", min_length=1, description="Serve application name")
    num_replicas: int = Field(1, ge=1, description="replicas of the LLM deployment; each holds "
                              "the models of both roles (one engine when they share a model)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica (Ray sets torch's "
                            "threads to this)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray "
                                        "resources per replica, e.g. {llm_node: 0.01} to pin "
                                        "replicas to the nodes that have them")
    max_batch_size: int = Field(8, ge=1, description="requests per engine batch (@serve.batch)")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="how long a batch waits to fill")
    max_concurrent_batches: int = Field(
        1, ge=1, le=64, description="engine batches a replica runs at once, per kind (chat, "
        "score). 1 suits in-process engines (transformers, llamacpp), which run one batch at "
        "a time; raise it for engines that batch requests themselves (openai, vllm: a vLLM "
        "server's continuous batching; simulated), so requests that arrive while a batch runs "
        "join the server's running batch instead of waiting for the whole batch to finish")
    max_ongoing_requests: int = Field(32, ge=1, description="requests a replica accepts at once; "
                                      ">= max_batch_size x (max_concurrent_batches + 1), so the "
                                      "running batches are full and one more can fill")
    cache_sync_s: float = Field(1.0, ge=0, description="a replica asks the store for cached "
                                "responses only for keys it knows the store holds, learnt with "
                                "each of its commits and, when it has heard nothing for this "
                                "long, once before a lookup: so a response another replica "
                                "cached less than this long ago can miss (asked and counted "
                                "again). 0: ask the store for every batch's keys (exact; one "
                                "round trip more per batch of new requests)")
    transport: Literal["grpc", "actor"] = Field(
        "grpc", description="how callers' requests reach a replica: 'grpc', Serve's "
        "interdeployment gRPC transport (each caller holds a gRPC channel to each replica; "
        "the request and its answer travel in the call, not through Ray's object store), or "
        "'actor', Ray actor calls (Serve's default, 'by reference'). A request's ledger row "
        "and its cached response are committed by the replica before it answers either way")
    store_channel: Literal["socket", "ray"] = Field(
        "socket", description="how a replica sends each engine batch's cache lookup and "
        "commit to the run's store: 'socket', the store's own authenticated TCP socket on an "
        "ephemeral port of the store's node (replicas' nodes must reach that node on any "
        "port), or 'ray', Ray actor calls (only Ray's ports; 2.1 ms more a request on the "
        "2-core machine: benchmarks/results/proxy_ab_store_socket.json). Exact either way: "
        "the replica answers after the commit returns")
    request_timeout_s: float = Field(300.0, gt=0, description="a caller gives up on one LLM "
                                     "request after this long")
    timeout_retries: int = Field(1, ge=0, le=10, description="times a request that timed out "
                                 "or lost its replica is sent again (same request and seed, "
                                 "so a late answer that reached "
                                 "the cache is reused); after that it is dropped: an env step "
                                 "becomes a failed evolution with reason 'timeout' and a "
                                 "neutral reward, and the ledger counts a failure")
    http_host: str = Field("127.0.0.1", description="address of the OpenAI-compatible route; "
                           "loopback unless you mean to expose it")
    http_port: int = Field(8000, ge=0, le=65535, description="port of the HTTP route")
    route_prefix: str = Field("/", pattern=r"^/", description="HTTP prefix of this app (two "
                              "apps on one cluster need different prefixes)")

    @model_validator(mode="after")
    def _room_for_batches(self) -> ServeConfig:
        # Requests of a running batch stay ongoing until it answers: room for every running
        # batch full, plus one filling.
        needed = self.max_batch_size * (self.max_concurrent_batches + 1)
        if self.max_ongoing_requests < needed:
            raise ValueError(
                f"max_ongoing_requests = {self.max_ongoing_requests}: expected >= "
                f"max_batch_size x (max_concurrent_batches + 1) = {self.max_batch_size} x "
                f"({self.max_concurrent_batches} + 1) = {needed}, so that the running batches "
                f"are full and one more can fill")
        return self
