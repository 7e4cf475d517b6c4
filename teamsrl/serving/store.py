"""The run's response cache and query ledger behind one Ray actor, shared by every LLM replica.

Why one store actor. With N `LLMServer` replicas on different nodes, one SQLite cache and ledger
per replica fragments the ledger (the figure the headline rests on) and lets a repeated request
miss the cache because it landed on another replica. Here one named, detached actor
(`teamsrl-store-<app>`, namespace `teamsrl`) is the only process that opens the two files; every
replica asks it for the cached responses of an engine batch (`get_many`) when it knows the store
holds some of the batch's keys (each replica keeps the keys' 64-bit tags, learnt with the
replies to its commits: `StoreClient`), and, after the engine call, commits the batch's ledger
row and its new responses in one call (`commit`) before the replica answers anyone. So the
ledger is exact cluster-wide whatever replica a request lands on, a SIGKILLed replica loses no
committed row (it never held any), and `ServeLLMClient.ledger`, the generation summary and
`teamsrl compare` read the same figures; the cache serves every response cached more than
`serving.cache_sync_s` (1 s) before the request, on any replica (0: every response). It costs
one round trip to the store per engine batch of new requests, two when some are cached (not per
request), over the store's own socket (`_Channel`; `serving.store_channel: ray` for Ray actor
calls), while a GPU batch takes seconds. Side by side on the 2-core machine
(`benchmarks/proxy_ab.py`): skipping the lookup for new requests took the Serve path from 8.09
to 6.87 ms p50 a request (`benchmarks/results/proxy_ab_cache_tags.json`), the socket instead of
Ray's call from 6.67 to 4.56 (`benchmarks/results/proxy_ab_store_socket.json`).
The store's capacity (`benchmarks/store_throughput.py`, `benchmarks/results/store_throughput.json`:
1, 3 and 6 callers, each a replica's `StoreClient` looping batches of 8 new requests with
64-token answers, on the 2-core machine, callers and store sharing its 2 cores): 1599, 1392 and
1233 batches/s, up to ~12,800 requests/s, with the lookup skipped (one caller's batch 0.38 ms
p50); 1340, 1291 and 1241 batches/s with a lookup every batch. That is the request rate of some
300-600 GPUs at the simulated vLLM engine's ceiling (~2,500 tokens/s, 64-128-token answers:
20-40 requests/s each), far above
the paper's run; beyond that, N store actors partitioned by cache key would scale it. The other
design (route requests to replicas by cache key with a Serve `RequestRouter`, per-replica ledger
shards merged on read) was not chosen: it ties load balancing to key hashes (a hot replica
cannot shed load), re-partitions the cache whenever the replica count changes, and still needs
a merge for every ledger read.

Exactness details. `commit` writes the ledger row first (then the responses), under a batch id:
the actor restarts (`max_restarts=-1`), a replica resends a commit whose connection broke (over
a new one, to the address Ray gives: `StoreClient._call`; Ray retries an interrupted actor call
itself, `max_task_retries=-1`), and `QueryLedger` ignores a batch id it already has, so a resent
commit counts once. A replica killed after its engine call but before its commit returns nothing and
committed nothing: its callers send the requests again (`ServeLLMClient`), and only the answers
someone received are counted.

Shared storage. The store is placed on the node of the process that deploys the app (soft
affinity: elsewhere if that node is gone), so only that node needs the files; but a later
command may run elsewhere, and Ray may restart the store on another node. So `deploy` writes a
check file (`.teamsrl-store-check`, a random id written once) into the folder of each store file
from the deploying process, and the store refuses to start, and a running store is refused, when
it does not read the same id there: `SharedStorageError` names the folder and both hosts. Run
folders on a cluster belong on storage every node mounts at the same path (cluster/README.md).

    store = start_store("teamsrl-llm", StorePaths.of(config.llm, run_dir))   # driver (deploy)
    client = LLMClient(engines, cache=StoreClient(store, "train"), ...)      # replica
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from teamsrl.layout import RunLayout
from teamsrl.llm.cache import ResponseCache
from teamsrl.llm.config import LLMConfig
from teamsrl.llm.ledger import QueryLedger, RoleTotals

NAMESPACE = "teamsrl"
CHECK_FILE = ".teamsrl-store-check"
SOCKET_ATTEMPTS = 3  # a store call over the socket: the first try, then two on new connections


def store_name(app_name: str) -> str:
    """The store actor's name for a Serve app."""
    return f"teamsrl-store-{app_name}"


class SharedStorageError(RuntimeError):
    """The store's node does not see the run folder the deploying process sees."""


class StoreUnavailableError(RuntimeError):
    """The store actor cannot be reached (dead and not restartable): a batch cannot be
    committed, so its answers are not returned."""


@dataclass(frozen=True)
class StorePaths:
    """Absolute paths of the run's cache (None: caching off) and ledger."""

    cache: str | None
    ledger: str

    @classmethod
    def of(cls, config: LLMConfig, run_dir: str | Path) -> StorePaths:
        """The files an `LLMConfig` names (defaults under `run_dir`), resolved here, in the
        deploying process, so the store never reads them relative to its own working dir."""
        layout = RunLayout.of(run_dir)
        cache = Path(config.cache.path or layout.cache) if config.cache.enabled else None
        return cls(cache=str(cache.resolve()) if cache else None,
                   ledger=str(Path(config.ledger_path or layout.ledger).resolve()))

    def folders(self) -> list[Path]:
        """The folders holding the store files."""
        return sorted({Path(p).parent for p in (self.cache, self.ledger) if p})


def write_checks(paths: StorePaths) -> dict[str, str]:
    """Create (once) a check file in each store folder, from this process: {path: its id}."""
    checks = {}
    for folder in paths.folders():
        folder.mkdir(parents=True, exist_ok=True)
        check = folder / CHECK_FILE
        try:
            with open(check, "x") as f:  # first deploy into this folder: a fresh id
                f.write(uuid.uuid4().hex)
        except FileExistsError:
            pass
        checks[str(check)] = check.read_text().strip()
    return checks


def verify_checks(checks: dict[str, str], written_on: str) -> None:
    """Raise `SharedStorageError` unless every check file reads here as it was written."""
    for path, expected in checks.items():
        try:
            found = Path(path).read_text().strip()
        except FileNotFoundError:
            found = None
        if found == expected:
            continue
        seen = "finds no such file" if found is None else \
            f"reads id {found!r} there, expected {expected!r} (another folder at the same path)"
        raise SharedStorageError(
            f"run folder {str(Path(path).parent)!r} is not shared between nodes: the deploy "
            f"step on {written_on} wrote {CHECK_FILE} there, but the cache-and-ledger store on "
            f"{_where()} {seen}. Put run_dir (and llm.cache.path, llm.ledger_path) on storage "
            "every node mounts at the same path (NFS, a shared volume); see cluster/README.md")


class RunStore:
    """The Ray actor body: the only writer of the run's cache and ledger (one call at a time).

    Replicas reach its per-batch calls (`get_many`, `commit`, `tags_since`) over the store's
    own socket (`_Channel`); everything else, and the socket's address, over Ray."""

    def __init__(self, paths: StorePaths, checks: dict[str, str], written_on: str) -> None:
        verify_checks(checks, written_on)  # also when Ray restarts the store on another node
        self.paths = paths
        self.cache = ResponseCache(paths.cache) if paths.cache else None
        self.ledger = QueryLedger(paths.ledger)
        self._lock = threading.Lock()  # Ray's calls (one thread) beside the socket's threads
        self._channel = _Channel({"get_many": self.get_many, "commit": self.commit,
                                  "tags_since": self.tags_since})

    def channel(self) -> tuple[tuple[str, int], bytes]:
        """The socket's address and its key (handed out over Ray, whose token guards it)."""
        return self._channel.address, self._channel.authkey

    def info(self) -> dict:
        """The store's files and where it runs."""
        return {"paths": asdict(self.paths), "where": _where()}

    def verify(self, checks: dict[str, str], written_on: str) -> None:
        """Check that this store sees another deploying process's check files."""
        verify_checks(checks, written_on)

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """Cached responses among `keys`."""
        with self._lock:
            return self.cache.get_many(keys) if self.cache is not None else {}

    def tags_since(self, seq: int) -> tuple[int, list[int]]:
        """`key_tag`s of the responses cached after position `seq` (0 = all), and the
        position now: what a replica's `StoreClient` adds to the keys it knows."""
        with self._lock:
            return self._tags_since(seq)

    def _tags_since(self, seq: int) -> tuple[int, list[int]]:
        if self.cache is None:
            return seq, []
        seq, keys = self.cache.keys_since(seq)
        return seq, [key_tag(k) for k in keys]

    def commit(self, batch: str, items: dict[str, dict], role: str, kind: str, counts: dict,
               since: int | None = None) -> tuple[int, list[int]] | None:
        """One engine batch: its ledger row (ignored if `batch` is already recorded), then its
        new responses; with `since`, returns `tags_since(since)` (this batch's keys and every
        other replica's since then), in the same round trip."""
        with self._lock:
            self.ledger.record(role, kind, batch=batch, **counts)
            if items and self.cache is not None:
                self.cache.put_many(items)
            return None if since is None else self._tags_since(since)

    def totals(self, stage: str | None = None) -> dict[str, RoleTotals]:
        """Per-role ledger totals, optionally of one stage."""
        with self._lock:
            return self.ledger.totals(stage=stage)

    def queries_by_node(self, stage: str | None = None) -> dict[str, int]:
        """Queries per calling Ray node."""
        with self._lock:
            return self.ledger.queries_by_node(stage)


class _Channel:
    """The store's socket for the calls of every engine batch: a
    `multiprocessing.connection.Listener` on the store's node address (its IP, an ephemeral
    port; HMAC-authenticated with a random key that only Ray hands out), a thread per
    connection (one per replica thread: `StoreClient`), each request a pickled (method, args)
    answered with (ok, value or exception); the calls take the store's lock themselves.

    Why not Ray's actor call: the store's own work on a batch is tens of microseconds, the
    round trip around it was most of the cost; with the commit over this socket instead the
    Serve path took 4.56 ms p50 a request instead of 6.67, side by side on the 2-core machine
    (`benchmarks/proxy_ab.py`, `benchmarks/results/proxy_ab_store_socket.json`).
    `serving.store_channel: ray` keeps Ray's calls (for clusters whose nodes reach each other
    only on Ray's ports)."""

    def __init__(self, calls: dict) -> None:
        import os
        from multiprocessing.connection import Listener

        import ray

        self.calls = calls
        self.authkey = os.urandom(32)
        # backlog: every replica thread may connect at once (multiprocessing's default is 1:
        # the rest of a burst of connects waited for SYN retransmits, seconds each)
        self._listener = Listener((ray.util.get_node_ip_address(), 0), backlog=512,
                                  authkey=self.authkey)
        self.address = self._listener.address
        threading.Thread(target=self._accept, name="teamsrl-store-accept", daemon=True).start()

    def _accept(self) -> None:
        from multiprocessing import AuthenticationError

        while True:
            try:
                conn = self._listener.accept()  # the handshake: a wrong key raises here
            except (AuthenticationError, EOFError, ConnectionError):
                continue  # that peer only
            except OSError:
                return  # the listener closed
            threading.Thread(target=self._serve, args=(conn,), name="teamsrl-store-conn",
                             daemon=True).start()

    def _serve(self, conn) -> None:
        with conn:
            while True:
                try:
                    name, args = conn.recv()
                except (EOFError, OSError):  # the replica (or its thread) is gone
                    return
                try:
                    reply = (True, self.calls[name](*args))
                except Exception as e:  # noqa: BLE001 - the caller raises it
                    reply = (False, e)
                try:
                    conn.send(reply)
                except OSError:
                    return


def start_store(app_name: str, paths: StorePaths, timeout_s: float = 60.0):
    """The app's store actor (created if absent, replaced if it serves other files), checked
    to see this process's run folder; returns its handle. Call where the app is deployed."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = store_name(app_name)
    here = f"{socket.gethostname()} (Ray node {ray.get_runtime_context().get_node_id()[:12]})"
    checks = write_checks(paths)
    if store_paths(app_name, timeout_s) not in (None, asdict(paths)):
        stop_store(app_name, timeout_s)  # the app was redeployed for another run folder
    store = _lookup(name)
    if store is None:
        store = ray.remote(RunStore).options(
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_restarts=-1, max_task_retries=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True),
        ).remote(paths, checks, here)
    try:  # a running store raises SharedStorageError itself (as a RayTaskError subclass)
        ray.get(store.verify.remote(checks, here), timeout=timeout_s)
    except ray.exceptions.RayActorError as e:  # a new store refused to start: say why
        marker = f"{SharedStorageError.__name__}: "
        if marker in str(e):
            raise SharedStorageError(str(e)[str(e).rindex(marker) + len(marker):].strip()) \
                from None
        raise
    return store


def store_paths(app_name: str, timeout_s: float = 60.0) -> dict | None:
    """The files the app's running store serves (`asdict(StorePaths)`), None if none runs."""
    import ray

    store = _lookup(store_name(app_name))
    return None if store is None else ray.get(store.info.remote(), timeout=timeout_s)["paths"]


def stop_store(app_name: str, timeout_s: float = 60.0) -> None:
    """Kill the app's store actor (after `serve.delete(app)`; its files stay)."""
    import ray

    store = _lookup(store_name(app_name))
    if store is None:
        return
    ray.kill(store, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while _lookup(store_name(app_name)) is not None:  # the name is freed asynchronously
        if time.monotonic() > deadline:
            raise TimeoutError(f"store {store_name(app_name)!r}: still registered "
                               f"{timeout_s:g} s after being killed")
        time.sleep(0.1)


def _lookup(name: str):
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def _where() -> str:
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "?"
    return f"{socket.gethostname()} (Ray node {node[:12]})"


def key_tag(key: str) -> int:
    """A cache key's 64-bit tag (the same in every process, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class StoreClient:
    """An `LLMClient`'s cache *and* ledger inside a replica, both served by the store actor.

    Lookups. The client keeps the tags (`key_tag`) of every key the store holds, learnt when it
    starts (all of them), with the reply to each of its commits (the keys every replica cached
    since its previous commit) and, when it has not heard from the store for `sync_s` seconds,
    with one call before a lookup. `get_many` asks the store only for keys whose tag it knows:
    a batch of new requests (the common case: each env step's rewrite is new) costs no round
    trip before the engine. The price: a response another replica cached less than `sync_s`
    ago, and after this replica's last commit, can miss here; it is then asked of the engine
    again, and counted again (the ledger counts engine calls; exactness of the ledger does not
    depend on the tags). With one replica every key is known when cached. `sync_s` 0 asks the
    store for every batch's keys (exact, one round trip more per batch). Memory: a Python int
    in a set per cached response (~70 bytes: 70 MB a replica for a million cached responses).

    Commits. `LLMClient` sees that its cache is its ledger and commits an engine batch with
    `commit(new responses, counts)`: one call to the store, which records the ledger row and
    then caches the responses, and the replica answers only after it returns. `record` (a
    replica with its cache off) commits the row alone.
    """

    def __init__(self, store, stage: str, sync_s: float = 1.0, channel: str = "socket") -> None:
        if channel not in ("socket", "ray"):
            raise ValueError(f"serving.store_channel = {channel!r}: expected 'socket' or 'ray'")
        self.store = store
        self.channel = channel
        self.stage = stage  # the ledger stage of calls that name none (QueryLedger's default)
        self.sync_s = sync_s
        self.lookups = {"asked": 0, "skipped": 0}  # get_many calls sent to the store or not
        self._known: set[int] = set()  # tags of the keys the store held at position _seq
        self._seq = 0
        self._synced = 0.0  # time.monotonic() of the last reply that carried tags
        self._lock = threading.Lock()
        self._local = threading.local()  # each thread's connection to the store's socket
        if sync_s:  # with 0 every lookup goes to the store: no tags to keep
            self._learn(self._call("tags_since", 0))

    # ---- the ResponseCache side
    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """Cached responses among `keys`: one round trip to the store if any key's tag is
        known, none otherwise (plus one to learn new tags when the last is `sync_s` old)."""
        if self.sync_s == 0:
            asked = keys
        else:
            if time.monotonic() - self._synced >= self.sync_s:
                self._learn(self._call("tags_since", self._seq))
            asked = [k for k in keys if key_tag(k) in self._known]
        with self._lock:
            self.lookups["asked" if asked else "skipped"] += 1
        return self._call("get_many", asked) if asked else {}

    # ---- the QueryLedger side
    def commit(self, items: dict[str, dict], role: str, kind: str, *, stage: str | None = None,
               **counts) -> None:
        """Commit one engine batch: its ledger row, then its new responses, in one call (whose
        reply brings the tags of the keys cached since the last, unless `sync_s` is 0)."""
        counts["stage"] = stage or self.stage
        since = self._seq if self.sync_s else None  # None: the store sends no tags back
        reply = self._call("commit", uuid.uuid4().hex, items, role, kind, counts, since)
        if reply is not None:
            self._learn(reply)

    def record(self, role: str, kind: str, **counts) -> None:
        """Commit one batch's ledger row (no responses to cache)."""
        self.commit({}, role, kind, **counts)

    def totals(self, *, stage: str | None = None) -> dict[str, RoleTotals]:
        """Per-role totals of every replica's calls."""
        return self._wait(self.store.totals.remote(stage))

    def queries_by_node(self, stage: str | None = None) -> dict[str, int]:
        """Queries per calling Ray node."""
        return self._wait(self.store.queries_by_node.remote(stage))

    def close(self) -> None:
        """Nothing to close: the store actor owns the files."""

    def _learn(self, reply: tuple[int, list[int]]) -> None:
        # Replies of concurrent batches may arrive out of order: each covers (the position it
        # was asked from, its position], and every key up to _seq is known, so the union of
        # the tags with the larger position keeps that true.
        seq, tags = reply
        with self._lock:
            self._known.update(tags)
            self._seq = max(self._seq, seq)
            self._synced = time.monotonic()

    def _call(self, name: str, *args):
        """One call over this thread's connection to the store's socket. A broken connection
        (the store died; Ray restarts it with a new socket) is made again from the address
        Ray gives, and the call sent again: a commit's batch id makes it count once. With
        channel 'ray': a Ray actor call."""
        if self.channel == "ray":
            return self._wait(getattr(self.store, name).remote(*args))
        for attempt in range(1, SOCKET_ATTEMPTS + 1):
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    from multiprocessing.connection import Client

                    address, authkey = self._wait(self.store.channel.remote())
                    conn = self._local.conn = Client(address, authkey=authkey)
                conn.send((name, args))
                ok, value = conn.recv()
            except (EOFError, OSError) as e:
                self._local.conn = None
                if conn is not None:
                    conn.close()
                if attempt == SOCKET_ATTEMPTS:
                    raise StoreUnavailableError(f"the run's cache-and-ledger store does not "
                                                f"answer on its socket ({e!r}); the batch was "
                                                "not committed") from e
                continue
            if not ok:
                raise value
            return value

    def _wait(self, ref):
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise StoreUnavailableError(f"the run's cache-and-ledger store is gone ({e}); the "
                                        "batch was not committed") from e
