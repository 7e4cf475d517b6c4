"""`teamsrl report RUN_DIR`: the run on one Markdown page with PNG figures.

    teamsrl report runs/quickstart        # -> runs/quickstart/report/report.md + *.png

Reads what the stages wrote (a missing or unreadable input skips its figure with a note):
`train-policy-metrics.jsonl` (PPO), `generate/{policy,random}/summary.json` (datasets),
`finetune/<arm>/metrics.jsonl` (SFT loss), `eval/<arm>/{results,mia,reference}.json` (scores,
attack, reference loss) — one column per arm, the paper's table: the model fine-tuned on the
policy's data beside the one fine-tuned on the Evol-Instruct baseline's. A run evaluated with
the standalone defaults (`finetune/`, `eval/` themselves) shows as one column, "fine-tuned".
The figures also go to W&B (offline by default) as the run's `report` job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamsrl.evaluate import figures
from teamsrl.evaluate.reference import format_interval
from teamsrl.layout import ARMS, RunLayout

STANDALONE = "fine-tuned"  # the column of a run evaluated with the standalone defaults


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


def arm_folders(root: Path, marker: str) -> dict[str, Path]:
    """{arm: root/arm} when the pipeline's per-arm folders exist (every arm, found or not),
    else {"fine-tuned": root} when `root/marker` is there (standalone defaults), else {}."""
    if any((root / arm).is_dir() for arm in ARMS):
        return {arm: root / arm for arm in ARMS}
    return {STANDALONE: root} if (root / marker).is_file() else {}


def _rel(run_dir: Path, path: Path) -> str:
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


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
        name = _rel(run_dir, path)
        if not path.is_file():
            sec.lines.append(f"- `{label}`: {name} not found.")
            continue
        rows, _ = read_jsonl(path)
        rows = [r for r in rows if _number(r.get("loss")) and _number(r.get("step"))]
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


@dataclass
class ArmEval:
    """What `teamsrl evaluate` wrote for one arm's fine-tuned model (or why it is missing)."""

    tasks: dict[str, Any] = field(default_factory=dict)
    mia: Any = None  # MIAResult
    reference: Any = None  # ReferenceResult
    steps: Any = None  # the fine-tune's optimizer steps, when its summary.json says
    notes: list[str] = field(default_factory=list)


def read_arm_eval(run_dir: Path, label: str, folder: Path) -> ArmEval:
    """An arm's scores, attack and reference loss; each missing or broken file becomes a note."""
    from teamsrl.evaluate.mia import MIAResult
    from teamsrl.evaluate.reference import ReferenceResult

    arm = ArmEval()
    results = folder / "results.json"
    if results.is_file():
        try:
            record = read_json(results)
            arm.tasks = {k: v for k, v in (record.get("tasks") or {}).items()
                         if isinstance(v, dict) and _number(v.get("score"))}
            if record.get("mia_skipped"):
                arm.notes.append(f"membership attack skipped: {record['mia_skipped']}")
        except ValueError as e:
            arm.notes.append(f"{_rel(run_dir, results)} unreadable ({e})")
    else:
        arm.notes.append(f"{_rel(run_dir, results)} not found")
    path = folder / "mia.json"
    if path.is_file():
        try:
            arm.mia = MIAResult(**read_json(path))
            if not arm.mia.roc.get("fpr"):
                raise ValueError("no ROC points")
        except (TypeError, ValueError) as e:
            arm.mia = None
            arm.notes.append(f"{_rel(run_dir, path)} unreadable ({e})")
    path = folder / "reference.json"
    if path.is_file():
        try:
            arm.reference = ReferenceResult.from_json(read_json(path))
        except (TypeError, ValueError, KeyError) as e:
            arm.notes.append(f"{_rel(run_dir, path)} unreadable ({type(e).__name__}: {e})")
    ft = RunLayout.of(run_dir).finetune
    summary = (ft / label if label in ARMS else ft) / "summary.json"
    if summary.is_file():
        try:
            arm.steps = read_json(summary).get("steps")
        except ValueError:
            pass
    return arm


def eval_sections(run_dir: Path, out: Path) -> list[Section]:
    """Both arms' fine-tuned models side by side: lm-eval scores, reference loss, attack."""
    table = Section("Fine-tuned models side by side (lm-eval scores, reference loss, attack)")
    ref = Section("Reference loss: human-written answers, fine-tuned vs base")
    mia = Section("Membership-inference attack")
    folders = arm_folders(RunLayout.of(run_dir).eval, "results.json")
    if not folders:
        note = ("_Skipped: eval/results.json not found or holds no task score (run `teamsrl "
                "evaluate`; the pipeline writes eval/<arm>/)._")
        return [Section(table.title, [note]), Section(ref.title, [note]),
                Section(mia.title, [note])]
    arms = {label: read_arm_eval(run_dir, label, folder) for label, folder in folders.items()}
    _paper_table(table, arms, out)
    _reference_part(ref, arms, out)
    _attack_part(mia, arms, out)
    return [table, ref, mia]


def _paper_table(sec: Section, arms: dict[str, ArmEval], out: Path) -> None:
    labels = list(arms)
    cells: dict[str, list[str]] = {}  # row name -> one cell per arm
    tasks = sorted({t for a in arms.values() for t in a.tasks})
    cells["fine-tuning steps (same base)"] = [_fmt(a.steps) for a in arms.values()]
    for t in tasks:
        cells[t] = [f"{a.tasks[t]['score']:.3f} ± {_fmt(a.tasks[t].get('stderr'))} "
                    f"({a.tasks[t].get('metric')}, n={_fmt(a.tasks[t].get('n_samples'))})"
                    if t in a.tasks else "–" for a in arms.values()]
    cells["reference loss, fine-tuned (nats/token)"] = [
        format_interval(a.reference.loss) if a.reference else "–" for a in arms.values()]
    cells["reference loss, base"] = [
        format_interval(a.reference.base_loss) if a.reference else "–" for a in arms.values()]
    cells["**reference loss, fine-tuned minus base**"] = [
        f"**{format_interval(a.reference.difference, sign=True)}**" if a.reference else "–"
        for a in arms.values()]
    cells["membership attack AUC"] = [_auc_cell(a) for a in arms.values()]
    sec.lines += ["| | " + " | ".join(f"`{x}`" for x in labels) + " |",
                  "| --- |" + " ---: |" * len(labels)]
    sec.lines += [f"| {row} | " + " | ".join(values) + " |" for row, values in cells.items()]
    sec.lines.append("")
    levels = sorted({f"{x.confidence:.0%}" for a in arms.values()
                     for x in (a.reference, a.mia) if x is not None})
    sec.lines.append(f"Intervals: {'/'.join(levels) or '–'} percentile bootstrap, over tasks "
                     "for the reference loss, over rows for the attack (methods below); ± is "
                     "lm-eval's standard error.")
    steps = {a.steps for a in arms.values() if a.steps is not None}
    if len(steps) > 1:
        sec.lines.append(f"**The arms' fine-tuning budgets differ** ({sorted(steps)} steps): "
                         "the comparison is not at the same budget.")
    for label, a in arms.items():
        sec.lines += [f"- `{label}`: {n}." for n in a.notes]
    scored = {label: a.tasks for label, a in arms.items() if a.tasks}
    if scored:
        sec.figure = figures.eval_scores(scored, out / "eval-scores.png")
        sec.caption = ("Headline metric per task and arm; error bars are lm-eval's standard "
                       "errors.")
        if any(r.get("smoke_set") for t in scored.values() for r in t.values()):
            sec.lines.append("\nTasks named `teamsrl_*_smoke` are teamsrl's offline smoke "
                             "sets (24 hand-written items each), **not** ARC or HellaSwag.")


def _auc_cell(a: ArmEval) -> str:
    m = a.mia
    if m is None:
        return "–"
    cell = (f"{m.auc:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] ({m.n_members} members vs "
            f"{m.n_nonmembers} non-members)")
    return cell if m.informative else f"{cell}: **not informative**"


def _reference_part(sec: Section, arms: dict[str, ArmEval], out: Path) -> None:
    scored = {label: a.reference for label, a in arms.items() if a.reference}
    if not scored:
        sec.lines.append("_Skipped: no eval/<arm>/reference.json (`teamsrl evaluate "
                         "--reference FILE`; the pipeline scores its seed split's reference "
                         "tasks)._")
        return
    sec.figure = figures.reference_losses(scored, out / "reference-loss.png")
    sec.caption = ("Mean loss per answer token of human-written reference answers (tasks no "
                   "seed of this run), base model vs each arm's fine-tune, with bootstrap "
                   "intervals over tasks; lower = the fine-tune predicts human answers better.")
    for label, r in scored.items():
        sec.lines.append(f"- `{label}`: fine-tuned minus base "
                         f"{format_interval(r.difference, sign=True)} over {r.n_tasks} tasks "
                         f"({r.source or 'reference file'}).")
    sec.lines.append(f"\nMethod: {next(iter(scored.values())).method}.")


def _attack_part(sec: Section, arms: dict[str, ArmEval], out: Path) -> None:
    results = {label: a.mia for label, a in arms.items() if a.mia is not None}
    if not results:
        reasons = [n for a in arms.values() for n in a.notes if "attack" in n or "mia" in n]
        sec.lines.append(f"_Skipped: {reasons[0]}._" if reasons else "_Skipped: no "
                         "eval/mia.json (`teamsrl evaluate` on a fine-tune folder writes it)._")
        return
    sec.figure = figures.roc_curves(results, out / "mia-roc.png")
    sec.caption = ("ROC of the loss-based attack that guesses whether a row was in the "
                   "fine-tuning data, per arm. The diagonal (AUC 0.5) is an attacker who cannot "
                   "tell.")
    for label, m in results.items():
        line = (f"- `{label}`: AUC {m.auc:.3f}, {m.confidence:.0%} interval [{m.ci_low:.3f}, "
                f"{m.ci_high:.3f}]; {m.n_members} members (training rows) vs {m.n_nonmembers} "
                f"non-members (held-out rows); attack: {m.attack}.")
        if not m.informative:
            line += f" **The figure is {m.note}.**"
        sec.lines.append(line)
    method = next((m.interval_method for m in results.values() if m.interval_method), "")
    if method:
        sec.lines.append(f"\nInterval: {method}.")
    sec.lines.append("The paper reports 0.47 (TeaMs-RL) vs 0.72 (WizardLM).")


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
