"""One rewrite by the expert: `teamsrl evolve --instruction TEXT --action NAME`.

The smallest end-to-end use of the LLM layer: render the operation's prompt, send it through the
cached, ledgered client, print the rewrite. Run it twice: 1 query, then 0 queries and 1 cache hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from teamsrl.actions import ActionSet
from teamsrl.config import ExperimentConfig
from teamsrl.llm.client import LLMClient, build_client
from teamsrl.llm.ledger import RoleTotals


@dataclass
class Evolution:
    """A rewrite and the ledger totals of this call and of the whole run."""

    text: str
    truncated: bool
    this_call: dict[str, RoleTotals]
    run_total: dict[str, RoleTotals]


def evolve_prompt(client: LLMClient, actions: ActionSet, instruction: str, action: str,
                  seed: int) -> tuple[str, bool]:
    """Apply one operation to one instruction; returns (rewrite, instruction was truncated)."""
    prompt = actions.render_for(client, action, instruction)
    (response,) = client.chat("expert", [client.request("expert", list(prompt.messages), seed)])
    return response.text, prompt.truncated


def run_evolve(config: ExperimentConfig, instruction: str, action: str, seed: int | None = None
               ) -> Evolution:
    """Build the client from config, rewrite once, and read the ledger."""
    if not instruction.strip():
        raise ValueError("--instruction: expected a non-empty instruction, got an empty string")
    actions = ActionSet.from_config(config.actions)
    actions.index(action)  # fail on a bad name before loading any model
    client = build_client(config.llm, Path(config.run_dir), stage="evolve")
    try:
        text, truncated = evolve_prompt(client, actions, instruction, action,
                                        config.seed if seed is None else seed)
        return Evolution(text, truncated, client.ledger.session_totals(), client.ledger.totals())
    finally:
        client.close()
