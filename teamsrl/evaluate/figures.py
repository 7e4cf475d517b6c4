"""The report's figures (matplotlib, Agg backend): each takes plain data and a PNG path
(`quality_vs_queries` is also `benchmarks/headline.py`'s figure).

Every figure has axis labels with units and a legend; `teamsrl.evaluate.report` reads the run's
files and decides which figures can be drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARM_LABELS = {"policy": "trained policy (TeaMs-RL)",
              "random": "random operations (Evol-Instruct baseline)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


def ppo_curves(iters: list[int], returns: list[float], components: dict[str, list[float]],
               path: Path) -> Path:
    """Left: mean episode return per PPO iteration; right: each reward component per step."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    a.plot(iters, returns, marker="o", color="C0", label="mean episode return")
    a.set_xlabel("PPO iteration")
    a.set_ylabel("return (sum of rewards per episode)")
    a.set_title("Policy training: episode return")
    a.legend(loc="best")
    a.grid(alpha=0.3)
    for i, (name, values) in enumerate(sorted(components.items())):
        b.plot(iters, values, marker=".", color=f"C{i + 1}", label=name)
    b.axhline(0, color="grey", lw=0.8)
    b.set_xlabel("PPO iteration")
    b.set_ylabel("mean reward per env step (weighted)")
    b.set_title("Reward components (penalties < 0)")
    b.legend(loc="best", fontsize=8)
    b.grid(alpha=0.3)
    for ax in (a, b):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def action_shares(iters: list[int], counts: dict[str, list[float]], path: Path) -> Path:
    """Stacked share (%) of each rewriting operation among the steps of each iteration."""
    import numpy as np

    plt = _plt()
    names = sorted(counts)
    data = np.array([counts[n] for n in names], dtype=float)
    totals = data.sum(axis=0)
    shares = 100 * data / np.where(totals > 0, totals, 1)
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    ax.stackplot(iters, shares, labels=names, alpha=0.85)
    ax.set_xlim(min(iters), max(iters)) if len(iters) > 1 else None
    ax.set_ylim(0, 100)
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("share of steps taking the operation (%)")
    ax.set_title("Action distribution over training")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def diversity_vs_queries(arms: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Per arm: diversity and kept rows against cumulative expert queries."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for i, (arm, curve) in enumerate(sorted(arms.items())):
        q = [p["expert_queries"] for p in curve]
        style = {"marker": "o", "ms": 3, "color": f"C{i}", "label": ARM_LABELS.get(arm, arm)}
        a.plot(q, [p["diversity"] for p in curve], **style)
        b.plot(q, [p["rows_kept"] for p in curve], **style)
    a.set_xlabel("expert queries (cumulative count)")
    a.set_ylabel("diversity (mean pairwise cosine distance)")
    a.set_title("Dataset diversity vs expert queries")
    b.set_xlabel("expert queries (cumulative count)")
    b.set_ylabel("rows kept (count)")
    b.set_title("Kept rows vs expert queries")
    for ax in (a, b):
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def sft_loss(curves: dict[str, tuple[list[int], list[float]]], path: Path) -> Path:
    """Fine-tuning loss per optimizer step, one curve per arm."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for i, (arm, (steps, losses)) in enumerate(curves.items()):
        ax.plot(steps, losses, marker="o", ms=3, color=f"C{i}",
                label=f"{_label(arm)}: training loss (response tokens)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title("Supervised fine-tuning loss")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def eval_scores(arms: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    """Per task, one bar per arm (its headline metric, 0-1) with the standard error."""
    plt = _plt()
    names = sorted({n for tasks in arms.values() for n in tasks})
    first = {n: next(t[n] for t in arms.values() if n in t) for n in names}
    labels = [f"{n}\n({first[n]['metric']}, {first[n].get('num_fewshot', 0)}-shot"
              f"{', smoke set' if first[n].get('smoke_set') else ''})" for n in names]
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(5, 2.6 * len(names) + len(arms)), 4.2), dpi=100)
    for i, (arm, tasks) in enumerate(arms.items()):
        xs = [k + (i - (len(arms) - 1) / 2) * width for k in range(len(names))]
        scores = [tasks[n]["score"] if n in tasks else 0.0 for n in names]
        errors = [(tasks[n].get("stderr") or 0.0) if n in tasks else 0.0 for n in names]
        bars = ax.bar(xs, scores, width=width * 0.95, yerr=errors, capsize=5, color=f"C{i}",
                      label=f"{_label(arm)}: score ± standard error")
        for bar, s in zip(bars, scores, strict=True):
            ax.text(bar.get_x() + bar.get_width() * 0.78, s + 0.01, f"{s:.2f}", ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title("lm-eval scores of the fine-tuned models")
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def reference_losses(arms: dict[str, Any], path: Path) -> Path:
    """Left: reference loss of the base and of each arm's fine-tune; right: fine-tuned minus
    base per arm; every bar with its bootstrap interval over tasks (`ReferenceResult`s)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)

    def bar(ax, x, iv, color, label):
        ax.bar([x], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]], capsize=6,
               color=color, label=label)
        ax.text(x + 0.2, iv.mean / 2, f"{iv.mean:+.3f}" if ax is b else f"{iv.mean:.3f}",
                ha="left", va="center", fontsize=8, color="white")

    base = next(iter(arms.values()))
    bar(a, 0, base.base_loss, "grey", "base model")
    for i, (arm, r) in enumerate(arms.items()):
        bar(a, i + 1, r.loss, f"C{i}", f"{_label(arm)}: fine-tuned")
        bar(b, i, r.difference, f"C{i}", _label(arm))
    a.set_xticks(range(len(arms) + 1), ["base", *arms], fontsize=8)
    a.set_ylim(0, max(base.base_loss.high, *(r.loss.high for r in arms.values())) * 1.35)
    a.set_ylabel("loss (nats per answer token)")
    a.set_title(f"Reference loss over {base.n_tasks} human-written answers")
    b.axhline(0, color="grey", lw=0.8)
    b.margins(y=0.15)
    b.set_xticks(range(len(arms)), list(arms), fontsize=8)
    b.set_ylabel("fine-tuned minus base (nats per token)")
    b.set_title("Change from fine-tuning (< 0: better)")
    a.legend(loc="upper right", fontsize=7)
    b.legend(loc="lower right", fontsize=7)
    for ax in (a, b):
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def roc_curves(arms: dict[str, Any], path: Path) -> Path:
    """The membership attack's ROC per arm (`MIAResult`s) beside the chance diagonal."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    for i, (arm, m) in enumerate(arms.items()):
        caveat = "" if m.informative else ", NOT informative"
        ax.plot(m.roc["fpr"], m.roc["tpr"], lw=2, color=f"C{i}",
                label=f"{_label(arm)}: AUC {m.auc:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}], "
                      f"{m.n_members} vs {m.n_nonmembers}{caveat}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC 0.5, ideal privacy)")
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (share of non-members flagged)")
    ax.set_ylabel("true positive rate (share of members flagged)")
    ax.set_title("Membership-inference attack (members vs non-members)", fontsize=10)
    ax.legend(loc="lower right", fontsize=6)
    ax.grid(alpha=0.3)
    return _save(fig, path)


HEADLINE_LABELS = {**ARM_LABELS, "frequency": "random with the policy's action shares"}


def quality_vs_queries(valid_rows: dict[str, Any], reference_loss: dict[str, Any] | None,
                       path: Path) -> Path:
    """The headline (`benchmarks/headline.py`'s `summary`): judged-valid kept rows per arm vs
    expert queries with the bootstrap bands, the policy's x shifted by its training queries;
    beside it the reference loss per arm and budget when there is one."""
    plt = _plt()
    budgets = valid_rows["budgets"]
    t = valid_rows["training_queries"] or 0.0
    panels = 2 if reference_loss else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), dpi=120, squeeze=False)
    quality = axes[0][0]
    for i, (arm, curve) in enumerate(valid_rows["curve"].items()):
        x = [b + (t if arm == "policy" else 0.0) for b in budgets]
        label = HEADLINE_LABELS.get(arm, arm)
        if arm == "policy":
            label += f" (x includes {t:.0f} training queries)"
        quality.plot(x, curve, marker="o", color=f"C{i}", label=label)
        lo, hi = zip(*valid_rows["bands"][arm], strict=True)
        quality.fill_between(x, lo, hi, color=f"C{i}", alpha=0.2)
        if reference_loss:
            loss = [float("nan") if v is None else v for v in reference_loss["mean_loss"][arm]]
            axes[0][1].plot(x, loss, marker="o", color=f"C{i}", label=HEADLINE_LABELS.get(arm, arm))
    quality.set(xlabel="expert engine queries (count)", ylabel="kept rows judged valid (count)",
                title="Quality vs expert queries (95% bootstrap bands)")
    quality.legend(loc="best", fontsize=7)
    quality.grid(alpha=0.3)
    if reference_loss:
        axes[0][1].set(xlabel="expert engine queries (count)",
                       ylabel="reference loss (nats per answer token)",
                       title="Reference loss after the same fine-tuning steps")
        axes[0][1].legend(loc="best", fontsize=7)
        axes[0][1].grid(alpha=0.3)
    return _save(fig, path)
