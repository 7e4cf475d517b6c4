"""`teamsrl report RUN_DIR`: the run on one Markdown page with PNG figures.

    teamsrl report runs/quickstart        # -> runs/quickstart/report/report.md + *.png

Reads what the stages wrote (a missing or unreadable input skips its figure with a note):
`train-policy-metrics.jsonl` (PPO), `generate/{policy,random}/summary.json` (datasets) and their
`rows.jsonl` + `data.jsonl` (each arm's share of kept rows judged valid instructions, the steps
that failed as "not an instruction", and the first seeds' evolution chains to read),
`finetune/<arm>/metrics.jsonl` (SFT loss), `eval/<arm>/{results,mia,reference}.json` (scores,
attack, reference loss) — one column per arm, the paper's table: the model fine-tuned on the
policy's data beside the one fine-tuned on the Evol-Instruct baseline's. A run evaluated with
the standalone defaults (`finetune/`, `eval/` themselves) shows as one column, "fine-tuned".
A `benchmarks/headline.py` work dir (`headline.json`) gets the headline first: quality vs expert
queries with its bands, the ratios with their 95% intervals, the break-even size.
The figures also go to W&B (offline by default) as the run's `report` job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from teamsrl.evaluate import figures
from teamsrl.evaluate.report_eval import eval_sections
from teamsrl.evaluate.report_headline import headline_sections
from teamsrl.evaluate.report_parts import (
    Section,
    arm_folders,
    fmt,
    is_number,
    md_table,
    read_json,
    read_jsonl,
    rel,
)
from teamsrl.generation.chains import CHAIN_COLUMNS, SEEDS_SHOWN, chain_steps
from teamsrl.generation.compare import (
    CONFIDENCE,
    ValidityScorer,
    embedding_judge,
    read_generation,
    validity_share,
)
from teamsrl.layout import ARMS, RunLayout


def ppo_sections(run_dir: Path, out: Path) -> list[Section]:
    """Return curve + reward components, and the action distribution over iterations."""
    path = RunLayout.of(run_dir).metrics("train-policy")
    ppo = Section("Policy training (PPO)")
    acts = Section("Action distribution over training")
    if not path.is_file():
        note = f"_Skipped: {path.name} not found (no `teamsrl train-policy` run here)._"
        ppo.lines.append(note)
        acts.lines.append(note)
        return [ppo, acts]
    rows, bad = read_jsonl(path)
    rows = [r for r in rows if is_number(r.get("rollout/return_mean"))]
    if bad:
        ppo.lines.append(f"{bad} unreadable line(s) of {path.name} skipped.")
    if not rows:
        ppo.lines.append(f"_Skipped: no iteration with `rollout/return_mean` in {path.name}._")
        acts.lines.append(ppo.lines[-1])
        return [ppo, acts]
    iters = [int(r.get("iteration", r.get("step", i + 1))) for i, r in enumerate(rows)]
    comps = sorted({k for r in rows for k in r if k.startswith("reward/")})
    components = {k.split("/", 1)[1]: [r.get(k) if is_number(r.get(k)) else float("nan")
                                       for r in rows] for k in comps}
    ppo.figure = figures.ppo_curves(iters, [r["rollout/return_mean"] for r in rows],
                                    components, out / "ppo-return.png")
    ppo.caption = ("Left: mean episode return per PPO iteration. Right: each reward component "
                   f"({', '.join(sorted(components))}) averaged per env step; validity is "
                   "the judge's P(valid instruction) times its weight.")
    last = rows[-1]
    ppo.lines.append(f"{len(rows)} iterations; last return {last['rollout/return_mean']:.3f}"
                     + (f", expert queries {int(last['queries/expert'])}, reviewer queries "
                        f"{int(last.get('queries/reviewer', 0))}"
                        if is_number(last.get("queries/expert")) else "") + ".")
    names = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("actions/")})
    if names:
        counts = {n: [float(r.get(f"actions/{n}") or 0.0) for r in rows] for n in names}
        acts.figure = figures.action_shares(iters, counts, out / "actions.png")
        acts.caption = "Share of the env steps of each iteration that took each operation."
    else:
        acts.lines.append(f"_Skipped: no `actions/<name>` keys in {path.name}._")
    return [ppo, acts]


def generation_section(run_dir: Path, out: Path) -> Section:
    """Diversity and kept rows vs expert queries, policy vs random, and a table per arm."""
    sec = Section("Dataset generation: policy vs random baseline")
    summaries, curves = {}, {}
    for arm in ARMS:
        path = RunLayout.of(run_dir).generation(arm).summary
        if not path.is_file():
            sec.lines.append(f"- `{arm}`: generate/{arm}/summary.json not found.")
            continue
        try:
            summaries[arm] = read_json(path)
        except ValueError as e:
            sec.lines.append(f"- `{arm}`: generate/{arm}/summary.json unreadable ({e}).")
            continue
        curve = [p for p in summaries[arm].get("curve") or [] if isinstance(p, dict)
                 and all(is_number(p.get(k)) for k in ("expert_queries", "rows_kept",
                                                     "diversity"))]
        if curve:
            curves[arm] = curve
    if summaries:
        sec.lines += ["", "| arm | rows kept | expert queries | reviewer queries | expert "
                      "queries per kept row | diversity (mean pairwise distance) | distinct-2 "
                      "| drops |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for arm, s in summaries.items():
            q, d = s.get("queries") or {}, s.get("diversity") or {}
            kept, expert = s.get("rows_kept"), q.get("expert")
            per_row = f"{expert / kept:.2f}" if is_number(expert) and is_number(kept) and kept \
                else "–"
            drops = ", ".join(f"{k} {v}" for k, v in (s.get("drops") or {}).items()) or "–"
            sec.lines.append(f"| {arm} | {fmt(kept)} | {fmt(expert)} | "
                             f"{fmt(q.get('reviewer'))} | {per_row} | "
                             f"{fmt(d.get('mean_pairwise_distance'))} | "
                             f"{fmt(d.get('distinct_2'))} | {drops} |")
    if curves:
        sec.figure = figures.diversity_vs_queries(curves, out / "diversity-vs-queries.png")
        sec.caption = ("Left: diversity of the kept rows as generation proceeds, against the "
                       "expert queries spent so far. Right: rows kept against the same queries "
                       "(steeper = fewer queries per row).")
    else:
        sec.lines.append("_Figure skipped: no arm has a `curve` of (expert_queries, rows_kept, "
                         "diversity) points._")
    return sec


def data_sections(run_dir: Path, out: Path,
                  rescore: Callable[[], ValidityScorer] = embedding_judge) -> list[Section]:
    """Per arm: kept rows judged valid instructions and steps failed as not an instruction; and
    the first seeds' evolution chains, for a person to read (`rescore`: see `validity_share`)."""
    valid = Section("Instruction validity per arm", draws=False)
    chains = Section("Evolution chains: the first seeds of each arm", draws=False)
    cells = []
    for arm in ARMS:
        folder = RunLayout.of(run_dir).generation(arm)
        try:
            rows, kept = read_generation(folder.root)
        except (OSError, ValueError, KeyError, TypeError) as e:
            note = f"- `{arm}`: not shown ({type(e).__name__}: {e})."
            valid.lines.append(note)
            chains.lines += [f"### `{arm}`", "", note, ""]
            continue
        steps = chain_steps(rows, {r.row_id for r in kept})
        chains.lines += [f"### `{arm}`", "", *md_table(list(CHAIN_COLUMNS),
                                                        [s.cells() for s in steps], "lrllrrl"), ""]
        try:
            share = validity_share(rows, kept, folder.config, rescore)
        except Exception as e:  # e.g. the judge's model is not there: the chains still show
            valid.lines.append(f"- `{arm}`: validity not computed ({type(e).__name__}: {e}).")
            continue
        cells.append([arm, f"{share.share:.3f} ({share.valid} of {share.kept})",
                      share.interval(), f"{share.not_instruction_share:.3f} "
                      f"({share.not_instruction} of {share.steps})", share.method()])
    if cells:
        valid.lines[:0] = [*md_table(["arm", "kept rows judged valid", f"{CONFIDENCE:.0%} "
                                      "interval", 'steps failed as "not an instruction"',
                                      "judged by"], cells, "lrrrl"), ""]
    valid.lines.append(
        "Kept rows (data.jsonl) whose validity, the judge's P(valid instruction), reaches the "
        f"judge's threshold, with a {CONFIDENCE:.0%} percentile bootstrap interval over rows; "
        "a row judged during generation counts by its recorded validity and the run's judge "
        "(env.quality of its config.yaml), a row the run did not judge is scored now by the "
        "judge's embedding method (no LLM query). The next column is the share of all "
        "evolution steps (rows.jsonl) the judge failed as not an instruction. With "
        "env.reward.invalid_fails on, every judged kept row passed already (share 1 by "
        "construction) and that column tells the arms apart.")
    chains.lines[:0] = [f"The first {SEEDS_SHOWN} seeds in seed order of each arm: the seed "
                        "(step 0), then each step's operation, rewrite (cut), the reviewer's "
                        "verdict, the judge's validity (– not judged) and what became of it.", ""]
    return [valid, chains]


def sft_section(run_dir: Path, out: Path) -> Section:
    """Fine-tuning loss per optimizer step, one curve per arm."""
    sec = Section("Supervised fine-tuning")
    curves: dict[str, tuple[list[int], list[float]]] = {}
    folders = arm_folders(RunLayout.of(run_dir).finetune, "metrics.jsonl")
    if not folders:
        sec.lines.append("_Skipped: finetune/metrics.jsonl not found (no `teamsrl finetune` "
                         "run in RUN_DIR/finetune or RUN_DIR/finetune/<arm>)._")
        return sec
    for label, folder in folders.items():
        path = folder / "metrics.jsonl"
        name = rel(run_dir, path)
        if not path.is_file():
            sec.lines.append(f"- `{label}`: {name} not found.")
            continue
        rows, _ = read_jsonl(path)
        rows = [r for r in rows if is_number(r.get("loss")) and is_number(r.get("step"))]
        if not rows:
            sec.lines.append(f"- `{label}`: no row with `step` and `loss` in {name}.")
            continue
        curves[label] = ([int(r["step"]) for r in rows], [r["loss"] for r in rows])
        sec.lines.append(f"- `{label}`: {len(rows)} logged steps; loss {rows[0]['loss']:.3f} at "
                         f"step {rows[0]['step']} -> {rows[-1]['loss']:.3f} at step "
                         f"{rows[-1]['step']}.")
    if curves:
        sec.figure = figures.sft_loss(curves, out / "sft-loss.png")
        sec.caption = ("Mean cross-entropy on the response tokens, per optimizer step (all "
                       "ranks), for each arm's dataset from the same base model.")
    else:
        sec.lines.insert(0, "_Skipped: no fine-tuning loss to draw._")
    return sec


def render(run_dir: Path, sections: list[Section]) -> str:
    """The Markdown page."""
    drawn = sum(s.figure is not None for s in sections)
    expected = sum(s.draws for s in sections)
    lines = [f"# Run report: {run_dir.name}", "",
             f"Run folder `{run_dir}`; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
             f" by `teamsrl report`; {drawn} of {expected} figures drawn.", ""]
    for i, s in enumerate(sections, 1):
        lines += [f"## {i}. {s.title}", ""]
        if s.figure is not None:
            lines += [f"![{s.title}]({s.figure.name})", "", f"*Figure {i} ({s.figure.name}): "
                      f"{s.caption}*", ""]
        lines += [*s.lines, ""]
    return "\n".join(lines)


def build_report(run_dir: str | Path, config=None,
                 rescore: Callable[[], ValidityScorer] = embedding_judge) -> Path:
    """Write `<run_dir>/report/report.md` and its PNGs; returns the page's path (`rescore`
    scores kept rows a generation run did not judge: `validity_share`)."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR {str(run_dir)!r}: not a folder; expected a run "
                                "folder (the config's run_dir)")
    out = RunLayout.of(run_dir).report
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # a figure whose input has gone must not linger from an older report
    builders = [headline_sections, ppo_sections, generation_section,
                partial(data_sections, rescore=rescore), sft_section, eval_sections]
    sections: list[Section] = []
    for build in builders:
        try:
            made = build(run_dir, out)
        except Exception as e:  # one broken input must not cost the rest of the page
            name = getattr(build, "func", build).__name__
            made = Section(name.replace("_", " "), [f"_Skipped: {type(e).__name__}: {e}_"])
        sections += made if isinstance(made, list) else [made]
    page = out / "report.md"
    page.write_text(render(run_dir, sections), encoding="utf-8")
    if config is not None:
        _track(config, run_dir, sections)
    return page


def _track(config, run_dir: Path, sections: list[Section]) -> None:
    """The figures as W&B images (job `report`); the figure count in report-metrics.jsonl."""
    from teamsrl.tracking import Tracker

    tracker = Tracker(config.model_copy(update={"run_dir": str(run_dir)}), "report")
    drawn = [s for s in sections if s.figure is not None]
    tracker.log({"report/figures": len(drawn), "report/sections": len(sections)}, step=0)
    if tracker.run is not None and drawn:
        import wandb

        tracker.run.log({f"report/{s.figure.stem}": wandb.Image(str(s.figure),
                                                                caption=s.caption)
                         for s in drawn}, step=0)
    tracker.finish()
