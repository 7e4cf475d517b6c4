"""The `teamsrl` command: parses arguments and dispatches to the stage modules.

    teamsrl evolve --instruction "Write a poem." --action add_constraints
    teamsrl evolve --config experiments/quickstart.yaml --set llm.expert.max_tokens=64 ...

Every command takes `--config FILE` (an experiment YAML) and any number of `--set KEY=VALUE`
overrides; the config is validated before any model loads.
"""

from __future__ import annotations

import argparse
import os
import sys

from teamsrl.config import ConfigError, load_config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="experiment YAML (default: built-in defaults = the CPU quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set llm.expert.max_tokens=64 "
                        "(repeatable; VALUE is parsed as YAML)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="teamsrl",
        description="TeaMs-RL on Ray: train an instruction-rewriting policy with RL, generate "
                    "an instruction dataset with few expert queries, fine-tune and evaluate.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("evolve", help="rewrite one instruction with one operation (expert LLM)",
                       description="Apply one rewriting operation to one instruction with the "
                                   "expert model and print the rewrite and the query ledger. "
                                   "Responses are cached: a rerun costs no query.")
    _common(p)
    p.add_argument("--instruction", required=True, help="the instruction to rewrite")
    p.add_argument("--action", required=True,
                   help="operation name, e.g. breadth, add_constraints, deepening, "
                        "concretizing, increase_reasoning_steps, complicate_input")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: config seed)")
    p.set_defaults(handler=_evolve)
    return parser


def _evolve(args: argparse.Namespace) -> int:
    from teamsrl.evolve import run_evolve
    from teamsrl.llm.ledger import format_totals

    config = load_config(args.config, args.overrides)
    result = run_evolve(config, args.instruction, args.action, args.seed)
    print(result.text)
    if result.truncated:
        print("(the instruction was truncated to the prompt's token budget)", file=sys.stderr)
    print(f"ledger (this call): {format_totals(result.this_call)}")
    print(f"ledger (run total): {format_totals(result.run_total)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `teamsrl` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"teamsrl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
