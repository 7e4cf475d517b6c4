"""The `teamsrl` command: parses arguments and dispatches to the stage modules.

    teamsrl evolve --instruction "Write a poem." --action add_constraints
    teamsrl evolve --config experiments/quickstart.yaml --set llm.expert.max_tokens=64 ...

Every command takes `--config FILE` (an experiment YAML) and any number of `--set KEY=VALUE`
overrides; the config is validated before any model loads. Each sub-command is one `_add_<name>`
function (its arguments and its handler) followed by that handler; the handlers import their
stage module, so `teamsrl --help` loads no Ray, torch or vLLM.
"""

from __future__ import annotations

import argparse
import os
import sys

from teamsrl.config import ConfigError, load_config
from teamsrl.layout import RunLayout

_Subparsers = argparse._SubParsersAction  # what `add_subparsers` returns


def _parser(sub: _Subparsers, name: str, help: str, add) -> argparse.ArgumentParser:
    """A sub-command's parser: its help line, its `_add_<name>` docstring as the description,
    and the common --config/--set options."""
    p = sub.add_parser(name, help=help, description=_doc(add))
    _common(p)
    return p


def _doc(add) -> str:
    """A sub-command's --help description: its `_add_<name>` function's docstring."""
    return " ".join(add.__doc__.split())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="teamsrl",
        description="TeaMs-RL on Ray: train an instruction-rewriting policy with RL, generate "
                    "an instruction dataset with few expert queries, fine-tune and evaluate.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The order here is the order `teamsrl --help` lists them in.
    for add in (_add_evolve, _add_finetune, _add_evaluate, _add_report, _add_train_policy,
                _add_generate, _add_compare, _add_pipeline, _add_sweep, _add_rollout):
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `teamsrl` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, OSError, RuntimeError) as e:  # OSError: files, timeouts
        print(f"teamsrl {args.command}: error: {e}", file=sys.stderr)
        return 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="experiment YAML (default: built-in defaults = the CPU quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set llm.expert.max_tokens=64 "
                        "(repeatable; VALUE is parsed as YAML)")


def _address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. auto); default: start a local Ray")


def _add_evolve(sub: _Subparsers) -> None:
    """Apply one rewriting operation to one instruction with the expert model and print the rewrite
    and the query ledger. Responses are cached: a rerun costs no query.
    """
    p = _parser(sub, "evolve",
                "rewrite one instruction with one operation (expert LLM)", _add_evolve)
    p.add_argument("--instruction", required=True, help="the instruction to rewrite")
    p.add_argument("--action", required=True,
                   help="operation name, e.g. breadth, add_constraints, deepening, "
                        "concretizing, increase_reasoning_steps, complicate_input")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: config seed)")
    p.set_defaults(handler=_evolve)


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


def _add_finetune(sub: _Subparsers) -> None:
    """Supervised fine-tuning of finetune.base_model on an Alpaca-format dataset with DeepSpeed
    ZeRO (CPU: 2 gloo processes; GPU: one per GPU; or Ray Train). Writes a held-out split,
    checkpoints and a Hugging Face model folder.
    """
    p = _parser(sub, "finetune", "DeepSpeed ZeRO fine-tuning on a generated dataset", _add_finetune)
    p.add_argument("--data", required=True, metavar="RUN_DIR_OR_DATASET",
                   help="a generation run folder (data.jsonl or dataset/), a .jsonl file or a "
                        "saved datasets folder")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: split/, checkpoints/, model/, metrics.jsonl")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out")
    p.set_defaults(handler=_finetune)


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


def _add_evaluate(sub: _Subparsers) -> None:
    """Evaluate a fine-tuned model with lm-evaluation-harness (default: teamsrl's offline smoke
    tasks, which are NOT the benchmarks; with a hub: arc_challenge 25-shot, hellaswag 10-shot,
    acc_norm) and, for a `teamsrl finetune` folder, a loss-based membership attack (train rows
    vs held-out rows; AUC 0.5 = members cannot be told apart) and, with --reference, the loss of
    human-written reference answers under the model and its base. Writes OUT/results.json,
    OUT/mia.json, OUT/mia-roc.png, OUT/reference.json and logs to W&B (offline by default).
    """
    p = _parser(sub, "evaluate", "lm-eval scores and membership-inference AUC", _add_evaluate)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a `teamsrl finetune` --out folder (model/ + split/), or any Hugging "
                        "Face causal-LM folder (no attack then); default: <run_dir>/finetune")
    p.add_argument("--tasks", default=None, metavar="T1,T2",
                   help="comma-separated lm-eval task names (sets evaluate.tasks), e.g. "
                        "teamsrl_arc_smoke,teamsrl_hellaswag_smoke")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N examples of each task (sets evaluate.limit)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: <run_dir>/eval, where `teamsrl report` looks)")
    p.add_argument("--reference", default=None, metavar="FILE",
                   help="reference tasks with human-written answers (seed format: an output "
                        "column or Self-Instruct instances), none of them a seed of the run, "
                        "e.g. <run_dir>/seeds/reference.jsonl from the pipeline's seed split")
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from teamsrl.evaluate.run import format_summary, run_evaluate

    overrides = list(args.overrides)
    if args.tasks is not None:
        tasks = [t.strip() for t in args.tasks.split(",")]
        overrides.append(f"evaluate.tasks={json.dumps(tasks)}")
    if args.limit is not None:
        overrides.append(f"evaluate.limit={args.limit}")
    config = load_config(args.config, overrides)
    model = args.model or str(RunLayout.of(config.run_dir).finetune)
    print(format_summary(run_evaluate(config, model, args.out, reference=args.reference)))
    return 0


def _add_report(sub: _Subparsers) -> None:
    """Draw a run on one page: PPO return and reward components, action distribution, diversity vs
    expert queries (policy vs random baseline), SFT loss, eval scores, membership-attack ROC;
    in a benchmarks/headline.py work dir, the headline (quality vs queries, ratios, intervals).
    Reads whatever stages have written under RUN_DIR (a missing input skips its figure with a
    note) and writes RUN_DIR/report/report.md + PNGs; logs them to W&B.
    """
    p = _parser(sub, "report", "one Markdown page with the run's figures", _add_report)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (config run_dir)")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from teamsrl.evaluate.report import build_report

    config = load_config(args.config, args.overrides)
    page = build_report(args.run_dir, config)
    print(page)
    return 0


def _add_train_policy(sub: _Subparsers) -> None:
    """Train the instruction-rewriting policy with RLlib PPO. The expert and reviewer run as a Ray
    Serve app; env runners send their sub-envs' requests to it in batches. Checkpoints go to
    <run_dir>/policy/checkpoints, the exported policy to <run_dir>/policy/export, metrics to W&B
    (offline by default) and <run_dir>/train-policy-metrics.jsonl.
    """
    p = _parser(sub, "train-policy", "train the rewriting policy with RLlib PPO", _add_train_policy)
    _address(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint with the next iteration")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations to run now (default: policy.iterations)")
    p.set_defaults(handler=_train_policy)


def _train_policy(args: argparse.Namespace) -> int:
    from teamsrl.policy.train import train_policy

    config = load_config(args.config, args.overrides)
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations = {args.iterations}: expected >= 1")
    result = train_policy(config, address=args.address, resume=args.resume,
                          iterations=args.iterations)
    m = result.metrics
    print(f"trained to iteration {result.iterations}: return {m['rollout/return_mean']:.3f}, "
          f"expert queries {int(m['queries/expert'])}, reviewer queries "
          f"{int(m['queries/reviewer'])}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"policy export: {result.export}")
    return 0


def _add_generate(sub: _Subparsers) -> None:
    """Evolve every seed instruction for env.horizon steps with the trained policy's operations (or
    uniformly random ones: WizardLM's Evol-Instruct baseline), drop failed evolutions, let the
    expert answer the kept instructions, remove near-duplicates and write rows.jsonl,
    data.jsonl, dataset/, summary.json and a dataset card under
    <run_dir>/generate/<policy|random> (or --out). Rerun the same command after a crash:
    finished seeds are kept, cached queries are not re-sent.
    """
    p = _parser(sub, "generate",
                "generate the dataset from the policy or the random baseline", _add_generate)
    _address(p)
    p.add_argument("--policy", required=True, metavar="RUN_DIR|EXPORT|random",
                   help="a trained policy (its run dir, policy/export or the export folder) or "
                        "`random` for the Evol-Instruct baseline")
    p.add_argument("--seeds", default=None, metavar="FILE",
                   help="seed instructions (JSONL/JSON/CSV or a saved datasets folder; column "
                        "env.seed_column); default: env.seed_file, else the bundled 175 tasks")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: <run_dir>/generate/<policy|random>)")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from teamsrl.generation.run import run_generation

    config = load_config(args.config, args.overrides)
    s = run_generation(config, args.policy, args.out, args.seeds, address=args.address)
    drops = ", ".join(f"{k} {v}" for k, v in s["drops"].items()) or "none"
    print(f"{s['rows_kept']} rows kept of {s['rows_total']} from {s['seeds']} seeds; dropped: "
          f"{drops}; expert requests {s['queries']['expert']}, reviewer requests "
          f"{s['queries']['reviewer']}; diversity {s['diversity']['mean_pairwise_distance']:.4f}")
    print(f"dataset: {s['out']}")
    return 0


def _add_compare(sub: _Subparsers) -> None:
    """Rows kept, expert and reviewer requests (generation, policy training and total), requests
    per kept row, ledger queries and cache hits, diversity (mean pairwise embedding distance,
    distinct-2) and drop reasons of two `teamsrl generate` output folders, recomputed from their
    files; and validity: the share of kept rows judged valid instructions with a 95% bootstrap
    interval over rows (a row's validity recorded during generation against the run's judge
    threshold; a row the run did not judge scored now by the judge's embedding method, no LLM
    query; the last lines say which), and the share of all steps that failed as "not an
    instruction".
    """
    p = sub.add_parser("compare", help="compare two generation runs side by side",
                       description=_doc(_add_compare))
    p.add_argument("run_a", metavar="RUN_A", help="a generation output folder")
    p.add_argument("run_b", metavar="RUN_B", help="another generation output folder")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    import json

    from teamsrl.generation.compare import compare_table, run_stats

    a, b = run_stats(args.run_a), run_stats(args.run_b)
    print(json.dumps({"a": a, "b": b}, indent=2) if args.json else compare_table(a, b))
    return 0


def _add_pipeline(sub: _Subparsers) -> None:
    """Run the pipeline's stages in order under one run dir: split-seeds (policy-training seeds,
    generation seeds, reference tasks: disjoint, recorded), train-policy, generate (policy,
    random), finetune and evaluate both arms (same base, same steps; scores, membership attack,
    reference loss), report (both arms side by side). Finished stages are skipped on a rerun; an
    interrupted stage resumes from its checkpoint or rows.
    """
    p = _parser(sub, "pipeline", "run every stage in order (resumable)", _add_pipeline)
    _address(p)
    p.set_defaults(handler=_pipeline)


def _pipeline(args: argparse.Namespace) -> int:
    from teamsrl.pipeline import run_pipeline

    config = load_config(args.config, args.overrides)
    run_pipeline(config, address=args.address)
    return 0


def _add_sweep(sub: _Subparsers) -> None:
    """Run one Ray Tune trial per action set of a sweep YAML (experiments/sweep-action-sets.yaml):
    a short policy training and a small generation each, one W&B group, then a table with one
    row per trial: return, queries per kept row, diversity. --set overrides apply to every
    trial; --set run_dir=, name=, max_concurrent_trials=, trial_cpus= set the sweep's own keys.
    """
    p = _parser(sub, "sweep", "Ray Tune over action sets (train + generate per trial)", _add_sweep)
    _address(p)
    p.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    from teamsrl.sweep import load_sweep, run_sweep

    if not args.config:
        raise ValueError("--config: expected a sweep YAML, e.g. "
                         "experiments/sweep-action-sets.yaml")
    sweep, experiments = load_sweep(args.config, args.overrides)
    rows = run_sweep(sweep, experiments, address=args.address)
    print(f"{len(rows)} trials; results: {sweep.run_dir}/sweep-results.txt")
    return 0


def _add_rollout(sub: _Subparsers) -> None:
    """Roll out the instruction MDP (expert rewrites, reviewer verdicts, rewards) with a uniformly
    random policy — the Evol-Instruct baseline — and print mean return, reward components,
    action counts and the query ledger.
    """
    p = _parser(sub, "rollout", "run the instruction MDP with a fixed policy", _add_rollout)
    p.add_argument("--policy", default="random", choices=["random"],
                   help="random: a uniformly random operation at every step")
    p.add_argument("--episodes", type=int, default=20, help="episodes to run")
    p.add_argument("--num-envs", type=int, default=4,
                   help="episodes stepped together (their requests are batched)")
    p.set_defaults(handler=_rollout)


def _rollout(args: argparse.Namespace) -> int:
    from teamsrl.rollout import run_rollout

    config = load_config(args.config, args.overrides)
    summary = run_rollout(config, args.policy, args.episodes, args.num_envs)
    print(summary.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
