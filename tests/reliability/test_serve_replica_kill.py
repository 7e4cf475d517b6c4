"""A Serve replica SIGKILLed while a vector step's requests are in flight.

Serve starts a new replica (it reloads the model and reconnects to the run's store actor, the
only writer of the cache and the ledger: nothing the dead replica had committed is lost).
Measured on Ray 2.60, the requests meet one of two fates depending on when the kill lands:
those the dead replica had not started are re-routed by Serve itself; those it was running
raise `ActorDiedError` in the caller (the first full-suite run failed that way), which
`ServeLLMClient` now treats like a timeout: sent again, up to `serving.timeout_retries`. Either
way the step completes with every rewrite answered and nothing already in the ledger is lost.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from embedding_doubles import HashEmbedder

from envs.stepper import BatchStepper
from teamsrl.mdp import make_env
from teamsrl.serving.client import ServeLLMClient

pytestmark = pytest.mark.integration


def _replica_pids(app: str) -> list[int]:
    """The app's replica processes of THIS test session's Ray (other Ray sessions on the
    machine may run an app of the same name)."""
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if f"ServeReplica:{app}:" in p.name() + " ".join(p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


# test_llm_timeouts abandons requests on this shared app by design (a 50 ms timeout): the replica
# still runs them and their rows may land at any time later, so that stage is left out of the
# whole-ledger comparison (every other stage must match exactly)
_ABANDONED_STAGE = "timeout-test"


def _settled_totals(client) -> dict[str, tuple[int, int]]:
    """(queries, cache hits) per role over every stage but the one with abandoned requests."""
    while True:  # two reads: retried until no abandoned row landed between them
        abandoned = client.ledger.totals(stage=_ABANDONED_STAGE)
        total = client.ledger.totals()
        if client.ledger.totals(stage=_ABANDONED_STAGE) == abandoned:
            break
    out = {}
    for role, t in total.items():
        a = abandoned.get(role)
        out[role] = (t.queries - (a.queries if a else 0), t.cache_hits - (a.cache_hits if a else 0))
    return out


def _engine_batches(handle) -> int:
    """Engine batches the replica has started (it counts one before running each)."""
    return sum(handle.stats.remote().result(timeout_s=10)["batch_sizes"].values())


def test_replica_killed_mid_step_is_replaced_and_the_step_completes(ray_serve, caplog):
    handle, config, serve_config = ray_serve
    client = ServeLLMClient(handle, config.llm, timeout_s=120, stage="replica-kill",
                            timeout_retries=2)
    before = _settled_totals(client)
    (old_pid,) = _replica_pids(serve_config.app_name)
    envs = [make_env(config, client, embedder=HashEmbedder(), seed=i) for i in range(4)]
    stamp = time.time_ns()
    for i, env in enumerate(envs):
        env.reset(options={"instruction": f"Plan a trip number {i} to a lake ({stamp})."})
    client.count_tokens("expert", "warm")  # tokenizer loaded: the requests leave at once
    batches_before = _engine_batches(handle)
    killed: list[float] = []

    def killer():
        # kill once the replica has started an engine batch of this step (new texts: never
        # cached; 4 rewrites of 24 tokens keep the 135M model busy for seconds)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _engine_batches(handle) > batches_before:
                os.kill(old_pid, signal.SIGKILL)
                killed.append(time.monotonic())
                return
            time.sleep(0.02)  # polling interval, not synchronisation

    thread = threading.Thread(target=killer, daemon=True)
    start = time.monotonic()
    thread.start()
    results = BatchStepper(client).step(envs, [0, 1, 2, 3])
    end = time.monotonic()
    thread.join(5)
    assert len(killed) == 1 and killed[0] < end  # killed while the step was in flight
    (new_pid,) = _replica_pids(serve_config.app_name)
    assert new_pid != old_pid
    infos = [r[4] for r in results]
    resent = sum("lost with its replica" in r.getMessage() for r in caplog.records)
    print(f"replica kill: step took {end - start:.1f} s; {resent} request(s) re-sent by the "
          "client (the rest re-routed by Serve);", [(i["failure"], i["timeouts"]) for i in infos])
    assert all(i["timeouts"] == 0 for i in infos), infos  # retried, answered
    assert resent >= 1  # the kill hit requests the replica was running: the client re-sent them
    # exactly what the step asked for, each answered once: 4 rewrites, one verdict per rewrite
    # that passed the rules; nothing the killed replica was running is counted
    reviewed = sum(bool(i["reviewed"]) for i in infos)
    assert sum(i["queries"]["expert"] for i in infos) == 4
    step = client.ledger.totals(stage="replica-kill")
    assert {r: (t.queries, t.cache_hits, t.failures) for r, t in step.items()} == \
        {"expert": (4, 0, 0), **({"reviewer": (reviewed, 0, 0)} if reviewed else {})}
    # the ledger file survived the replica: every row written before the kill is still there
    after = _settled_totals(client)
    for role in set(before) | set(after):
        b, s, a = before.get(role, (0, 0)), step.get(role), after[role]
        assert a == (b[0] + (s.queries if s else 0), b[1] + (s.cache_hits if s else 0)), role
