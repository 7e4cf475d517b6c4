"""The report's figures (matplotlib, Agg backend): each takes plain data and a PNG path.

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


def sft_loss(steps: list[int], losses: list[float], path: Path) -> Path:
    """Fine-tuning loss per optimizer step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, marker="o", ms=3, label="training loss (response tokens)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title("Supervised fine-tuning loss")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def eval_scores(tasks: dict[str, dict[str, Any]], path: Path) -> Path:
    """One bar per task (its headline metric, 0-1) with the standard error as an error bar."""
    plt = _plt()
    names = list(tasks)
    scores = [tasks[n]["score"] for n in names]
    errors = [tasks[n].get("stderr") or 0.0 for n in names]
    labels = [f"{n}\n({tasks[n]['metric']}, {tasks[n].get('num_fewshot', 0)}-shot"
              f"{', smoke set' if tasks[n].get('smoke_set') else ''})" for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 2.6 * len(names)), 4.2), dpi=100)
    bars = ax.bar(range(len(names)), scores, yerr=errors, capsize=6, color="C0",
                  label="score ± standard error")
    for bar, s in zip(bars, scores, strict=True):
        ax.text(bar.get_x() + bar.get_width() * 0.75, s + 0.01, f"{s:.2f}", ha="center",
                va="bottom", fontsize=9)
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title("lm-eval scores of the fine-tuned model")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
