"""Configuration of the Ray Serve app that hosts the expert and reviewer roles."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    max_ongoing_requests: int = Field(32, ge=1, description="requests a replica accepts at once; "
                                      ">= 2x max_batch_size so batches can fill")
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
        if self.max_ongoing_requests < 2 * self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests = {self.max_ongoing_requests}: expected >= 2 x "
                f"max_batch_size = {2 * self.max_batch_size}, or batches can never fill")
        return self
