"""The cache and the query ledger stay exact with 3 `LLMServer` replicas on 3 Ray nodes.

One scenario (`serve_replicas_scenario.py`, its own `ray.cluster_utils` cluster of 3 virtual
nodes with 1 CPU each, one replica of 0.1 CPU per node) runs a generation through 2 shard
actors, the same generation again from its own process, then a third one through the shards
(new run seed) during which the replica running an engine call is SIGKILLed. The engines are
`engine: simulated`: deterministic texts and scaled sleeps. That is allowed here because the
property is bookkeeping, not text: which replica answers, whether a repeated request is a cache
hit, and whether every engine call is one ledger count do not depend on what the texts say. The
independent count is the replicas' own engine counters (`LLMServer.stats`, counted inside each
replica's engine calls, not from the ledger) and the requests the generator recorded in
rows.jsonl.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The scenario's counts (175 s on the 2 shared cores at load ~5, 252 s at load ~24)."""
    run_dir = tmp_path_factory.mktemp("serve-replicas")
    script = Path(__file__).with_name("serve_replicas_scenario.py")
    done = subprocess.run([sys.executable, str(script), str(run_dir)], capture_output=True,
                          text=True, timeout=1200, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((run_dir / "report.json").read_text())


def _queries(ledger: dict) -> dict[str, int]:
    return {role: t["queries"] for role, t in ledger.items()}


def test_rerun_on_three_replicas_sends_no_engine_query_and_the_ledger_counts_each(report):
    first, again = report["first"], report["again"]
    # three replicas, on the three nodes, each ran engine calls of the first run
    assert len(report["cluster_nodes"]) == 3
    assert first["replica_nodes"] == report["cluster_nodes"]
    assert len(first["engine_by_replica"]) == 3
    assert all(sum(sum(kinds.values()) for kinds in roles.values()) > 0
               for roles in first["engine_by_replica"].values())
    # first run: every request the generator made reached an engine once, and the ledger holds
    # exactly the engine calls the replicas counted
    engine = {role: t["n"] for role, t in first["engine"].items()}
    assert engine == _queries(first["ledger"]) == first["rows_requests"]
    assert engine["expert"] > 0 and engine["reviewer"] > 0
    assert all(t["cache_hits"] == 0 and t["failures"] == 0 for t in first["ledger"].values())
    # the same run again, whatever replica each request lands on: no engine query, all hits
    assert again["rows_requests"] == first["rows_requests"]
    assert {role: t["n"] for role, t in again["engine"].items()} == {"expert": 0, "reviewer": 0}
    assert _queries(again["ledger"]) == {"expert": 0, "reviewer": 0}
    assert {r: t["cache_hits"] for r, t in again["ledger"].items()} == again["rows_requests"]
    # one figure everywhere: ServeLLMClient.ledger, the ledger file, the generation summary
    # (what `teamsrl compare` reads) and compare's own cells (the stage's totals, both runs)
    for run in (first, again):
        assert run["summary_ledger"] == run["ledger_total"]
        assert run["file_ledger"] == {r: {k: t[k] for k in ("queries", "cache_hits")}
                                      for r, t in run["ledger_total"].items()}
        expert = run["ledger_total"]["expert"]
        assert run["compare"] == {"engine_queries_expert": expert["queries"],
                                  "cache_hits_expert": expert["cache_hits"]}
    assert again["ledger_total"]["expert"]["hit_rate"] == pytest.approx(0.5)


def test_replica_sigkilled_mid_run_loses_no_ledger_row_and_the_run_completes(report):
    killed, kill = report["killed"], report["kill"]
    assert kill["during_run"], "the replica was not killed while the run was going"
    assert sum(t["queries"] for t in kill["committed_before"].values()) > 0
    assert kill["pid"] not in killed["replica_pids"] and len(killed["replica_pids"]) == 3
    # every ledger row committed before the kill is still there, and rows were added after it
    assert set(kill["ids_before"]) <= set(kill["ids_after"])
    assert len(kill["ids_after"]) > len(kill["ids_before"])
    # the run completed: every seed finished, no request dropped
    assert killed["seeds_done"] == report["seeds"] and killed["timeouts"] == 0
    assert all(t["failures"] == 0 for t in killed["ledger"].values())
    # every request the generator made (all new: another run seed) is in the ledger as an engine
    # query: nothing the dead replica had committed is lost, nothing it had not is counted.
    # The one excess allowed: a batch whose commit reached the store just as its replica died
    # (then its re-sent requests are cache hits; at most the victim's chat and score batches)
    race = 2 * report["max_batch_size"]
    for role, made in killed["rows_requests"].items():
        t = killed["ledger"][role]
        assert made > 0
        assert made <= t["queries"] <= made + race, role
        assert t["cache_hits"] <= race, role


def test_deploy_refuses_a_run_folder_the_store_does_not_see(tmp_path, monkeypatch):
    """The store actor starts on a node whose folder at the run path is not the deploying
    process's (simulated: the driver's check ids differ from the files'): a clear error."""
    import ray

    from teamsrl.llm.config import LLMConfig
    from teamsrl.serving import store

    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    real = store.write_checks
    monkeypatch.setattr(store, "write_checks",
                        lambda paths: {path: "id-the-driver-wrote" for path in real(paths)})
    try:
        with pytest.raises(store.SharedStorageError,
                           match=rf"^run folder '{tmp_path}' is not shared between nodes: .*"
                           r"expected 'id-the-driver-wrote'.*every node mounts"):
            store.start_store("shared-check-test", store.StorePaths.of(LLMConfig(), tmp_path))
    finally:
        if own_ray:
            ray.shutdown()
