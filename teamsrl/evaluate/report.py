"""`teamsrl report RUN_DIR`: the run on one Markdown page with PNG figures.

    teamsrl report runs/quickstart        # -> runs/quickstart/report/report.md + *.png

Reads what the stages wrote (a missing or unreadable input skips its figure with a note):
`train-policy-metrics.jsonl` (PPO), `generate/{policy,random}/summary.json` (datasets),
`finetune/metrics.jsonl` (SFT loss), `eval/results.json` and `eval/mia.json` (scores, attack).
The figures also go to W&B (offline by default) as the run's `report` job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamsrl.evaluate import figures
from teamsrl.layout import ARMS, RunLayout


@dataclass
class Section:
    """One part of the page: a title, text lines, and the figure (or why there is none)."""

    title: str
    lines: list[str] = field(default_factory=list)
    figure: Path | None = None
    caption: str = ""


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON-object lines of a file and how many lines were not readable JSON objects."""
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk (ValueError when it is not one)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


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
    rows = [r for r in rows if _number(r.get("rollout/return_mean"))]
    if bad:
        ppo.lines.append(f"{bad} unreadable line(s) of {path.name} skipped.")
    if not rows:
        ppo.lines.append(f"_Skipped: no iteration with `rollout/return_mean` in {path.name}._")
        acts.lines.append(ppo.lines[-1])
        return [ppo, acts]
    iters = [int(r.get("iteration", r.get("step", i + 1))) for i, r in enumerate(rows)]
    comps = sorted({k for r in rows for k in r if k.startswith("reward/")})
    components = {k.split("/", 1)[1]: [r.get(k) if _number(r.get(k)) else float("nan")
                                       for r in rows] for k in comps}
    ppo.figure = figures.ppo_curves(iters, [r["rollout/return_mean"] for r in rows],
                                    components, out / "ppo-return.png")
    ppo.caption = ("Left: mean episode return per PPO iteration. Right: each reward component "
                   "(verdict, novelty, failure penalty, query cost, ...) averaged per env step.")
    last = rows[-1]
    ppo.lines.append(f"{len(rows)} iterations; last return {last['rollout/return_mean']:.3f}"
                     + (f", expert queries {int(last['queries/expert'])}, reviewer queries "
                        f"{int(last.get('queries/reviewer', 0))}"
                        if _number(last.get("queries/expert")) else "") + ".")
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
                 and all(_number(p.get(k)) for k in ("expert_queries", "rows_kept",
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
            per_row = f"{expert / kept:.2f}" if _number(expert) and _number(kept) and kept \
                else "–"
            drops = ", ".join(f"{k} {v}" for k, v in (s.get("drops") or {}).items()) or "–"
            sec.lines.append(f"| {arm} | {_fmt(kept)} | {_fmt(expert)} | "
                             f"{_fmt(q.get('reviewer'))} | {per_row} | "
                             f"{_fmt(d.get('mean_pairwise_distance'))} | "
                             f"{_fmt(d.get('distinct_2'))} | {drops} |")
    if curves:
        sec.figure = figures.diversity_vs_queries(curves, out / "diversity-vs-queries.png")
        sec.caption = ("Left: diversity of the kept rows as generation proceeds, against the "
                       "expert queries spent so far. Right: rows kept against the same queries "
                       "(steeper = fewer queries per row).")
    else:
        sec.lines.append("_Figure skipped: no arm has a `curve` of (expert_queries, rows_kept, "
                         "diversity) points._")
    return sec


def sft_section(run_dir: Path, out: Path) -> Section:
    """Fine-tuning loss per optimizer step."""
    sec = Section("Supervised fine-tuning")
    path = RunLayout.of(run_dir).finetune / "metrics.jsonl"
    if not path.is_file():
        sec.lines.append("_Skipped: finetune/metrics.jsonl not found (no `teamsrl finetune` "
                         "run in RUN_DIR/finetune)._")
        return sec
    rows, _ = read_jsonl(path)
    rows = [r for r in rows if _number(r.get("loss")) and _number(r.get("step"))]
    if not rows:
        sec.lines.append("_Skipped: no row with `step` and `loss` in finetune/metrics.jsonl._")
        return sec
    sec.figure = figures.sft_loss([int(r["step"]) for r in rows], [r["loss"] for r in rows],
                                  out / "sft-loss.png")
    sec.caption = "Mean cross-entropy on the response tokens, per optimizer step (all ranks)."
    sec.lines.append(f"{len(rows)} logged steps; loss {rows[0]['loss']:.3f} at step "
                     f"{rows[0]['step']} -> {rows[-1]['loss']:.3f} at step {rows[-1]['step']}.")
    return sec


def eval_sections(run_dir: Path, out: Path) -> list[Section]:
    """lm-eval scores (bar chart + table) and the membership attack's ROC."""
    from teamsrl.evaluate.mia import MIAResult, plot_roc

    scores, mia = Section("Evaluation (lm-eval)"), Section("Membership-inference attack")
    path = RunLayout.of(run_dir).eval / "results.json"
    tasks: dict[str, Any] = {}
    skipped = None  # why `teamsrl evaluate` did not attack, when it says so
    if path.is_file():
        try:
            record = read_json(path)
            skipped = record.get("mia_skipped")
            tasks = {k: v for k, v in (record.get("tasks") or {}).items()
                     if isinstance(v, dict) and _number(v.get("score"))}
        except ValueError as e:
            scores.lines.append(f"_Skipped: eval/results.json unreadable ({e})._")
    if tasks:
        scores.figure = figures.eval_scores(tasks, out / "eval-scores.png")
        scores.caption = "Headline metric per task; error bars are lm-eval's standard errors."
        scores.lines += ["| task | metric | score | ± stderr | examples | shots |",
                         "| --- | --- | ---: | ---: | ---: | ---: |"]
        scores.lines += [f"| {t} | {r.get('metric')} | {r['score']:.3f} | "
                         f"{_fmt(r.get('stderr'))} | {_fmt(r.get('n_samples'))} | "
                         f"{_fmt(r.get('num_fewshot'))} |" for t, r in tasks.items()]
        if any(r.get("smoke_set") for r in tasks.values()):
            scores.lines.append("\nTasks named `teamsrl_*_smoke` are teamsrl's offline smoke "
                                "sets (24 hand-written items each), **not** ARC or HellaSwag.")
    elif not scores.lines:
        scores.lines.append("_Skipped: eval/results.json not found or holds no task score "
                            "(run `teamsrl evaluate`)._")
    path = RunLayout.of(run_dir).eval / "mia.json"
    if not path.is_file():
        mia.lines.append(f"_Skipped: {skipped}._" if skipped else "_Skipped: eval/mia.json not "
                         "found (`teamsrl evaluate` on a fine-tune folder writes it)._")
        return [scores, mia]
    try:
        result = MIAResult(**read_json(path))
        if not result.roc.get("fpr"):
            raise ValueError("no ROC points")
    except (TypeError, ValueError) as e:
        mia.lines.append(f"_Skipped: eval/mia.json unreadable ({e})._")
        return [scores, mia]
    mia.figure = plot_roc(result, out / "mia-roc.png")
    mia.caption = ("ROC of the loss-based attack that guesses whether a row was in the "
                   "fine-tuning data. The diagonal (AUC 0.5) is an attacker who cannot tell.")
    mia.lines.append(f"AUC {result.auc:.3f}, {result.confidence:.0%} bootstrap interval "
                     f"[{result.ci_low:.3f}, {result.ci_high:.3f}]; {result.n_members} members "
                     f"(training rows) vs {result.n_nonmembers} non-members (held-out rows); "
                     f"attack: {result.attack}. The paper reports 0.47 (TeaMs-RL) vs 0.72 "
                     "(WizardLM).")
    return [scores, mia]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def render(run_dir: Path, sections: list[Section]) -> str:
    """The Markdown page."""
    drawn = sum(s.figure is not None for s in sections)
    lines = [f"# Run report: {run_dir.name}", "",
             f"Run folder `{run_dir}`; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
             f" by `teamsrl report`; {drawn} of {len(sections)} figures drawn.", ""]
    for i, s in enumerate(sections, 1):
        lines += [f"## {i}. {s.title}", ""]
        if s.figure is not None:
            lines += [f"![{s.title}]({s.figure.name})", "", f"*Figure {i} ({s.figure.name}): "
                      f"{s.caption}*", ""]
        lines += [*s.lines, ""]
    return "\n".join(lines)


def build_report(run_dir: str | Path, config=None) -> Path:
    """Write `<run_dir>/report/report.md` and its PNGs; returns the page's path."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR {str(run_dir)!r}: not a folder; expected a run "
                                "folder (the config's run_dir)")
    out = RunLayout.of(run_dir).report
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()  # a figure whose input has gone must not linger from an older report
    builders = [ppo_sections, generation_section, sft_section, eval_sections]
    sections: list[Section] = []
    for build in builders:
        try:
            made = build(run_dir, out)
        except Exception as e:  # one broken input must not cost the rest of the page
            made = Section(build.__name__.replace("_", " "),
                           [f"_Skipped: {type(e).__name__}: {e}_"])
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
