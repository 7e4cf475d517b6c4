"""The evaluation part of the run report: both arms' fine-tuned models side by side — the
paper's table (scores, reference loss, attack AUC), the reference-loss and ROC figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamsrl.evaluate import figures
from teamsrl.evaluate.reference import format_interval
from teamsrl.evaluate.report_parts import (
    Section,
    arm_folders,
    fmt,
    is_number,
    read_json,
    rel,
)
from teamsrl.layout import ARMS, RunLayout


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
                         if isinstance(v, dict) and is_number(v.get("score"))}
            if record.get("mia_skipped"):
                arm.notes.append(f"membership attack skipped: {record['mia_skipped']}")
        except ValueError as e:
            arm.notes.append(f"{rel(run_dir, results)} unreadable ({e})")
    else:
        arm.notes.append(f"{rel(run_dir, results)} not found")
    path = folder / "mia.json"
    if path.is_file():
        try:
            arm.mia = MIAResult(**read_json(path))
            if not arm.mia.roc.get("fpr"):
                raise ValueError("no ROC points")
        except (TypeError, ValueError) as e:
            arm.mia = None
            arm.notes.append(f"{rel(run_dir, path)} unreadable ({e})")
    path = folder / "reference.json"
    if path.is_file():
        try:
            arm.reference = ReferenceResult.from_json(read_json(path))
        except (TypeError, ValueError, KeyError) as e:
            arm.notes.append(f"{rel(run_dir, path)} unreadable ({type(e).__name__}: {e})")
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
    cells["fine-tuning steps (same base)"] = [fmt(a.steps) for a in arms.values()]
    for t in tasks:
        cells[t] = [f"{a.tasks[t]['score']:.3f} ± {fmt(a.tasks[t].get('stderr'))} "
                    f"({a.tasks[t].get('metric')}, n={fmt(a.tasks[t].get('n_samples'))})"
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
    skipped = ("_Skipped: no eval/<arm>/reference.json (`teamsrl evaluate --reference FILE`; "
               "the pipeline scores its seed split's reference tasks)._")
    caption = ("Mean loss per answer token of human-written reference answers (tasks no seed of "
               "this run), base model vs each arm's fine-tune, with bootstrap intervals over "
               "tasks; lower = the fine-tune predicts human answers better.")
    if not _figure(sec, scored, skipped, figures.reference_losses, out / "reference-loss.png",
                   caption):
        return
    for label, r in scored.items():
        sec.lines.append(f"- `{label}`: fine-tuned minus base "
                         f"{format_interval(r.difference, sign=True)} over {r.n_tasks} tasks "
                         f"({r.source or 'reference file'}).")
    sec.lines.append(f"\nMethod: {next(iter(scored.values())).method}.")


def _attack_part(sec: Section, arms: dict[str, ArmEval], out: Path) -> None:
    results = {label: a.mia for label, a in arms.items() if a.mia is not None}
    reasons = [n for a in arms.values() for n in a.notes if "attack" in n or "mia" in n]
    skipped = (f"_Skipped: {reasons[0]}._" if reasons else "_Skipped: no eval/mia.json "
               "(`teamsrl evaluate` on a fine-tune folder writes it)._")
    caption = ("ROC of the loss-based attack that guesses whether a row was in the fine-tuning "
               "data, per arm. The diagonal (AUC 0.5) is an attacker who cannot tell.")
    if not _figure(sec, results, skipped, figures.roc_curves, out / "mia-roc.png", caption):
        return
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


def _figure(sec: Section, results: dict, skipped: str, draw, path: Path, caption: str) -> bool:
    """Draw `results` into the section's figure, or note why it is skipped (then False)."""
    if not results:
        sec.lines.append(skipped)
        return False
    sec.figure, sec.caption = draw(results, path), caption
    return True
