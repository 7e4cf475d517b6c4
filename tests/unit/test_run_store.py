"""The run store's body (no Ray): idempotent batch commits and the shared-folder check."""

from __future__ import annotations

import pytest

from teamsrl.llm.config import LLMConfig
from teamsrl.serving.store import (
    CHECK_FILE,
    RunStore,
    SharedStorageError,
    StorePaths,
    verify_checks,
    write_checks,
)


def test_a_retried_commit_counts_once_and_stores_the_responses(tmp_path):
    paths = StorePaths.of(LLMConfig(), tmp_path)
    store = RunStore(paths, write_checks(paths), "driver")
    counts = {"queries": 2, "prompt_tokens": 10, "stage": "gen", "node": "n1"}
    for _ in range(2):  # Ray re-runs a call whose actor died: same batch id
        store.commit("batch-1", {"k1": {"text": "a"}, "k2": {"text": "b"}}, "expert", "chat",
                     counts)
    store.commit("batch-2", {}, "expert", "chat", {"queries": 0, "cache_hits": 2, "stage": "gen"})
    assert (store.totals("gen")["expert"].queries, store.totals("gen")["expert"].cache_hits) == \
        (2, 2)
    assert store.get_many(["k1", "k2", "k3"]) == {"k1": {"text": "a"}, "k2": {"text": "b"}}
    assert store.queries_by_node("gen") == {"": 0, "n1": 2}


def test_cache_off_stores_nothing_and_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = LLMConfig.model_validate({"cache": {"enabled": False}, "ledger_path": "l.sqlite"})
    paths = StorePaths.of(config, "run")
    assert paths.cache is None and paths.ledger == str(tmp_path / "l.sqlite")
    store = RunStore(paths, write_checks(paths), "driver")
    store.commit("b", {"k": {"text": "a"}}, "expert", "chat", {"queries": 1})
    assert store.get_many(["k"]) == {}


def test_a_folder_the_store_does_not_share_is_refused_with_both_sides_named(tmp_path):
    config = LLMConfig.model_validate({"cache": {"path": str(tmp_path / "c" / "cache.sqlite")}})
    paths = StorePaths.of(config, tmp_path / "run")
    checks = write_checks(paths)
    assert sorted(checks) == [str(tmp_path / "c" / CHECK_FILE), str(tmp_path / "run" / CHECK_FILE)]
    assert write_checks(paths) == checks  # written once: a later deploy reads the same ids
    verify_checks(checks, "host-a")
    # the store's node has its own folder at that path: another id, or none at all
    (tmp_path / "run" / CHECK_FILE).write_text("another-node")
    with pytest.raises(SharedStorageError, match=r"run folder '.*run' is not shared.*"
                       r"host-a.*reads id 'another-node' there, expected"):
        RunStore(paths, checks, "host-a")
    (tmp_path / "run" / CHECK_FILE).unlink()
    with pytest.raises(SharedStorageError, match="finds no such file.*storage every node mounts"):
        verify_checks(checks, "host-a")
