"""Shared fixtures. Heavy ones (the embedded models) are session-scoped: loaded once per run."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_engine():
    """The embedded SmolLM2-135M-Instruct engine (loaded once per test session)."""
    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.transformers_engine import TransformersEngine

    return TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=16)


@pytest.fixture
def embedded_client(smollm2_engine, tmp_path):
    """A client whose expert and reviewer share the embedded engine; cache and ledger on disk."""
    from teamsrl.llm.cache import ResponseCache
    from teamsrl.llm.client import LLMClient
    from teamsrl.llm.ledger import QueryLedger

    client = LLMClient(
        {"expert": smollm2_engine, "reviewer": smollm2_engine},
        cache=ResponseCache(tmp_path / "cache.sqlite"),
        ledger=QueryLedger(tmp_path / "ledger.sqlite"),
    )
    yield client
    client.close()
