"""The LLM app on Ray Serve: same texts as the local engine, batches that fill, one shared ledger,
and an OpenAI-compatible route on 127.0.0.1."""

from __future__ import annotations

import pytest

from teamsrl.serving.client import ServeLLMClient


def _requests(client, n, offset=0):
    return [client.request("expert", [{"role": "user", "content": f"Name a fruit, number {i}."}],
                           seed=offset + i, max_tokens=16) for i in range(n)]


def test_served_texts_equal_the_local_engine_and_batches_fill(ray_serve, smollm2_engine):
    handle, config, _ = ray_serve
    client = ServeLLMClient(handle, config.llm, stage="serve-test")
    before = handle.stats.remote().result()["batch_sizes"]
    reqs = _requests(client, 8, offset=500)
    served = client.chat("expert", reqs)
    assert [r.text for r in served] == [r.text for r in smollm2_engine.generate(reqs)]
    after = handle.stats.remote().result()["batch_sizes"]
    new_batches = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert max(k for k, v in new_batches.items() if v > 0) > 1  # requests were batched
    assert sum(k * v for k, v in new_batches.items()) == 8


def test_score_through_serve_equals_local(ray_serve, smollm2_engine):
    from teamsrl.llm.schema import ScoreRequest

    handle, config, _ = ray_serve
    client = ServeLLMClient(handle, config.llm)
    req = ScoreRequest(messages=[{"role": "user", "content": "What is the capital of France?"}],
                       candidates=("Paris", "Banana"))
    (resp,) = client.score("reviewer", [req])
    assert resp.logprobs[0] > resp.logprobs[1]
    assert resp.logprobs == pytest.approx(smollm2_engine.score([req])[0].logprobs, abs=1e-4)


def test_callers_in_other_processes_share_one_ledger(ray_serve):
    import ray

    handle, config, serve_config = ray_serve
    stage = "shared-ledger-test"

    @ray.remote(num_cpus=0)
    def caller(offset: int) -> int:
        from teamsrl.serving.client import ServeLLMClient

        client = ServeLLMClient.connect(serve_config.app_name, config.llm, stage=stage)
        reqs = [client.request("expert", [{"role": "user", "content": f"Count to {i}."}],
                               seed=offset + i, max_tokens=8) for i in range(3)]
        return len(client.chat("expert", reqs))

    assert ray.get([caller.remote(1000), caller.remote(2000)]) == [3, 3]
    totals = ServeLLMClient(handle, config.llm).ledger.totals(stage=stage)
    assert totals["expert"].queries + totals["expert"].cache_hits == 6
    assert totals["expert"].queries == 6


def test_requests_travel_over_the_configured_transport(ray_serve):
    """serving.transport 'grpc' (the default) sends each request over Serve's gRPC channel to
    the replica, 'actor' as a Ray actor call; deploy()'s handle and connect()'s follow it."""
    handle, config, serve_config = ray_serve
    assert serve_config.transport == "grpc"
    assert handle.roles.remote().by_reference is False
    roles = {r: s.model for r, s in (("expert", config.llm.expert),
                                     ("reviewer", config.llm.reviewer))}
    for transport, by_reference in (("grpc", False), ("actor", True)):
        client = ServeLLMClient.connect(serve_config.app_name, config.llm, transport=transport)
        response = client.handle.roles.remote()
        assert response.by_reference is by_reference, transport
        assert response.result() == roles


def test_openai_package_gets_a_completion_from_loopback(ray_serve):
    import openai

    _, _, serve_config = ray_serve
    assert serve_config.http_host == "127.0.0.1"
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{serve_config.http_port}/v1",
                           api_key="unused", max_retries=0)
    resp = client.chat.completions.create(
        model="expert", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
        seed=7, temperature=0.7)
    assert resp.choices[0].message.content.strip()
    assert resp.usage.completion_tokens <= 8
    with pytest.raises(openai.NotFoundError, match="expected one of"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="expert", temperature=9,
                                       messages=[{"role": "user", "content": "x"}])
    ids = {m.id for m in client.models.list().data}
    assert ids == {"expert", "reviewer"}


def test_openai_package_streams_the_completion_as_server_sent_events(ray_serve):
    """`stream=True` gets the same text as the plain call, in chunks, with usage when asked."""
    import openai

    _, _, serve_config = ray_serve
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{serve_config.http_port}/v1",
                           api_key="unused", max_retries=0)
    ask = {"model": "expert", "messages": [{"role": "user", "content": "Name a colour."}],
           "max_tokens": 8, "seed": 11, "temperature": 0.7}
    whole = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(**ask, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and text == whole.choices[0].message.content
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="expert", temperature=9, stream=True,
                                       messages=[{"role": "user", "content": "x"}])


def test_openai_engine_over_http_gives_the_local_engines_texts(ray_serve, smollm2_engine):
    """The engine the vLLM path uses, pointed at our own OpenAI route."""
    from teamsrl.llm.openai_engine import OpenAIEngine
    from teamsrl.llm.schema import ChatRequest

    _, _, serve_config = ray_serve
    engine = OpenAIEngine(f"http://127.0.0.1:{serve_config.http_port}/v1", "expert")
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"Name a river, number {i}."}],
                        temperature=0.7, seed=900 + i, max_tokens=12) for i in range(3)]
    remote = engine.generate(reqs)
    assert [r.text for r in remote] == [r.text for r in smollm2_engine.generate(reqs)]
    assert all(r.completion_tokens > 0 for r in remote)


@pytest.mark.parametrize("concurrent", [1, 12])
def test_a_replica_runs_max_concurrent_batches_engine_batches_at_once(ray_serve, tmp_path,
                                                                      concurrent):
    """Batches of 1 with no wait, 12 chats in flight, a simulated engine call lasting ~0.4 s:
    with max_concurrent_batches 12 the replica's engine calls overlap, more than the 6 that
    asyncio's default thread pool ran at once on 2 cores (cpu_count + 4), with 1 they never do.
    Counted as calls entered (`_CountingEngine`), whatever the engine does inside them."""
    from ray import serve

    from teamsrl.config import load_config
    from teamsrl.llm.config import simulated_overrides
    from teamsrl.serving.deployment import deploy
    from teamsrl.serving.store import stop_store

    _, _, shared = ray_serve
    app = f"teamsrl-llm-concurrent-{concurrent}"
    config = load_config(None, [
        f"run_dir={tmp_path}", *simulated_overrides(time_scale=2.0),
        f"serving.app_name={app}", f"serving.route_prefix=/concurrent-{concurrent}",
        f"serving.http_port={shared.http_port}", "serving.num_cpus=0.25",
        "serving.max_batch_size=1", "serving.batch_wait_timeout_s=0",
        f"serving.max_concurrent_batches={concurrent}", "serving.max_ongoing_requests=16"])
    handle = deploy(config.llm, config.serving, tmp_path, stage="concurrent")
    try:
        client = ServeLLMClient(handle, config.llm, stage="concurrent")
        assert len(client.chat("expert", _requests(client, 12))) == 12  # <= 16 tokens each
        stats = handle.stats.remote().result()
    finally:
        serve.delete(app)
        stop_store(app)
    assert stats["batch_sizes"] == {1: 12}
    peak = stats["engine_running_peak"]["expert"]
    least = 1 if concurrent == 1 else 8
    assert least <= peak <= concurrent, f"max_concurrent_batches {concurrent}: peak {peak}"


def test_the_app_deployed_again_for_another_run_folder_ledgers_into_that_folder(ray_serve,
                                                                               tmp_path):
    """Deploying an app for another run folder replaces its store; the replicas must follow
    (they held the old, killed store: every request failed). Each folder's ledger counts its
    own runs' queries and cache hits: first, second, then first again."""
    from ray import serve

    from teamsrl.config import load_config
    from teamsrl.layout import RunLayout
    from teamsrl.llm.config import simulated_overrides
    from teamsrl.llm.ledger import QueryLedger
    from teamsrl.serving.deployment import deploy
    from teamsrl.serving.store import stop_store

    _, _, shared = ray_serve
    app = "teamsrl-llm-redeploy"
    try:
        for i, run in enumerate(("first", "second", "first")):
            config = load_config(None, [
                f"run_dir={tmp_path / run}", *simulated_overrides(time_scale=0),
                f"serving.app_name={app}", "serving.route_prefix=/redeploy",
                f"serving.http_port={shared.http_port}", "serving.num_cpus=0.25"])
            handle = deploy(config.llm, config.serving, config.run_dir, stage=run)
            client = ServeLLMClient(handle, config.llm, stage=run)
            assert len(client.chat("expert", _requests(client, 2 + i))) == 2 + i
    finally:
        serve.delete(app)
        stop_store(app)
    # first again: its 2 earlier requests come from its own cache, 2 new reach the engine
    for run, queries, hits in (("first", 2 + 2, 2), ("second", 3, 0)):
        totals = QueryLedger(RunLayout.of(tmp_path / run).ledger).totals()
        assert (totals["expert"].queries, totals["expert"].cache_hits) == (queries, hits), run


@pytest.mark.parametrize("channel", ["socket", "ray"])
def test_a_replica_asks_the_store_only_for_keys_it_knows_are_cached(ray_serve, tmp_path,
                                                                    channel):
    """`StoreClient` (a replica's cache): it knows the keys cached before it started, learns
    other replicas' keys with the reply to its own commit, sends no lookup for a batch of keys
    it does not know, and with sync_s 0 asks for every batch; over either channel. The store
    counts the lookups it receives itself."""
    import ray

    from teamsrl.llm.config import LLMConfig
    from teamsrl.serving.store import RunStore, StoreClient, StorePaths, write_checks

    class CountingStore(RunStore):
        lookups = 0

        def get_many(self, keys):
            self.lookups += 1
            return super().get_many(keys)

        def lookup_count(self):
            return self.lookups

    paths = StorePaths.of(LLMConfig(), tmp_path)
    store = ray.remote(CountingStore).options(num_cpus=0).remote(paths, write_checks(paths), "t")
    ray.get(store.commit.remote("b0", {"k0": {"text": "v0"}}, "expert", "chat", {"queries": 1}))
    looked = lambda: ray.get(store.lookup_count.remote())  # noqa: E731
    a, b = (StoreClient(store, "t", sync_s=3600, channel=channel)  # no refresh by time
            for _ in range(2))
    assert a.get_many(["new"]) == {} and looked() == 0  # unknown key: no round trip
    assert a.get_many(["k0", "new"]) == {"k0": {"text": "v0"}} and looked() == 1
    a.commit({"k1": {"text": "v1"}}, "expert", "chat", queries=1)
    assert b.get_many(["k1"]) == {} and looked() == 1  # cached since b last heard: a miss
    b.commit({"k2": {"text": "v2"}}, "expert", "chat", queries=1)  # ... whose reply tells b
    assert b.get_many(["k1", "k2"]) == {"k1": {"text": "v1"}, "k2": {"text": "v2"}}
    exact = StoreClient(store, "t", sync_s=0, channel=channel)
    a.commit({"k3": {"text": "v3"}}, "expert", "chat", queries=1)
    assert exact.get_many(["k3"]) == {"k3": {"text": "v3"}}
    assert exact.get_many(["never"]) == {} and looked() == 4  # asked all the same
    assert (a.lookups, b.lookups, exact.lookups) == ({"asked": 1, "skipped": 1},
                                                     {"asked": 1, "skipped": 1},
                                                     {"asked": 2, "skipped": 0})
    assert ray.get(store.totals.remote())["expert"].queries == 4
    ray.kill(store)


def test_the_store_socket_refuses_a_wrong_key_and_a_restarted_store_is_found_again(ray_serve,
                                                                                  tmp_path):
    """A replica's `StoreClient` sends its batches over the store's own socket: a peer without
    the key Ray hands out is refused (and the store goes on accepting others); when the store
    dies and Ray restarts it (a new socket), the client finds it again through Ray and its
    commit counts once."""
    import threading
    import time
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    import ray

    from teamsrl.llm.config import LLMConfig
    from teamsrl.serving.store import RunStore, StoreClient, StorePaths, write_checks

    def within(seconds: float, call):
        """call() in a daemon thread: a socket that never answers fails the test, not hangs it
        (multiprocessing's connections block without a timeout)."""
        out = {}

        def run():
            try:
                out["value"] = call()
            except Exception as e:  # noqa: BLE001 - re-raised below
                out["error"] = e

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(seconds)
        assert not thread.is_alive(), f"no answer in {seconds} s"
        if "error" in out:
            raise out["error"]
        return out["value"]

    paths = StorePaths.of(LLMConfig(), tmp_path)
    store = ray.remote(RunStore).options(num_cpus=0, max_restarts=1, max_task_retries=-1).remote(
        paths, write_checks(paths), "t")
    a = StoreClient(store, "t", sync_s=3600)
    a.commit({"k1": {"text": "v1"}}, "expert", "chat", queries=1)
    address, _ = ray.get(store.channel.remote())
    with pytest.raises(AuthenticationError):
        within(20, lambda: Client(address, authkey=b"not the store's key"))
    b = within(20, lambda: StoreClient(store, "t", sync_s=3600))  # a connection after it
    assert b.get_many(["k1"]) == {"k1": {"text": "v1"}}
    ray.kill(store, no_restart=False)  # SIGKILL; Ray starts it again, on a new port
    deadline = time.monotonic() + 60
    while ray.get(store.channel.remote())[0] == address:  # the kill lands asynchronously
        assert time.monotonic() < deadline, "the store was not restarted"
    a.commit({"k2": {"text": "v2"}}, "expert", "chat", queries=1)  # its broken connection
    assert ray.get(store.totals.remote())["expert"].queries == 2
    assert a.get_many(["k1", "k2"]) == {"k1": {"text": "v1"}, "k2": {"text": "v2"}}
    ray.kill(store)
