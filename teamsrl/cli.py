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

    p = sub.add_parser("finetune", help="DeepSpeed ZeRO fine-tuning on a generated dataset",
                       description="Supervised fine-tuning of finetune.base_model on an "
                                   "Alpaca-format dataset with DeepSpeed ZeRO (CPU: 2 gloo "
                                   "processes; GPU: one per GPU; or Ray Train). Writes a "
                                   "held-out split, checkpoints and a Hugging Face model folder.")
    _common(p)
    p.add_argument("--data", required=True, metavar="RUN_DIR_OR_DATASET",
                   help="a generation run folder (data.jsonl or dataset/), a .jsonl file or a "
                        "saved datasets folder")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: split/, checkpoints/, model/, metrics.jsonl")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out")
    p.set_defaults(handler=_finetune)
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


def _finetune(args: argparse.Namespace) -> int:
    from teamsrl.finetune.launch import run_finetune

    config = load_config(args.config, args.overrides)
    summary = run_finetune(config, args.data, args.out, resume=args.resume)
    if not summary["finished"]:
        print(f"paused at step {summary['steps']} of {summary['total_steps']} (stop_at_step); "
              f"continue with --resume")
        return 0
    print(f"model: {summary['model_dir']} ({summary['steps']} steps, ZeRO-"
          f"{summary['zero_stage']}, world size {summary['world_size']}); held-out rows: "
          f"{summary['split']['heldout_rows']} in {summary['split']['heldout_file']}")
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
