"""Loss-based membership-inference attack: were these rows in the fine-tuning data?

The attack scores every row by the fine-tuned model's mean loss on its response (Alpaca prompt,
the format it was trained in; lower loss = more likely a member), optionally calibrated by a
reference model's loss on the same row (score = reference loss - fine-tuned loss), and reports
the ROC AUC over members vs non-members with a stratified bootstrap interval. AUC 0.5 means the
attacker cannot tell them apart (the paper reports 0.47 for TeaMs-RL vs 0.72 for WizardLM).
With fewer than `evaluate.mia.min_per_side` rows on a side the attack still runs, but its record
says plainly that the figure is not informative: a handful of non-members make any AUC, and a
bootstrap over them, look certain (6 non-members gave AUC 1.000 [1.000, 1.000]).

Losses come from `TransformersEngine.score` (one forward pass per batch, no sampling).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class MIAResult:
    """AUC with its interval, the counts and the ROC curve of one attack."""

    auc: float
    ci_low: float
    ci_high: float
    confidence: float
    n_members: int
    n_nonmembers: int
    attack: str
    member_loss_mean: float
    nonmember_loss_mean: float
    roc: dict[str, list[float]] = field(default_factory=dict)
    uncalibrated: dict[str, float] | None = None
    model: str = ""
    reference_model: str | None = None
    skipped_rows: int = 0
    informative: bool = True  # False: fewer than evaluate.mia.min_per_side rows on a side
    note: str = ""  # why the figure is not informative, in words
    interval_method: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record written to `mia.json`."""
        return asdict(self)


def response_losses(engine, rows: list[dict[str, Any]]) -> list[float]:
    """Mean negative log-likelihood per response token of each row under `engine`'s model."""
    from teamsrl.finetune.data import alpaca_prompt
    from teamsrl.llm.schema import ScoreRequest

    # scored shortest first: batch-mates of similar length need little padding
    order = sorted(range(len(rows)), key=lambda i: len(alpaca_prompt(
        rows[i]["instruction"], rows[i].get("input", ""))) + len(rows[i]["output"]))
    requests = [ScoreRequest(prompt=alpaca_prompt(rows[i]["instruction"],
                                                  rows[i].get("input", "") or ""),
                             candidates=(rows[i]["output"],)) for i in order]
    losses = [0.0] * len(rows)
    for i, resp in zip(order, engine.score(requests), strict=True):
        losses[i] = -resp.logprobs[0] / max(1, resp.num_tokens[0])
    return losses


def auc_with_interval(member_scores, nonmember_scores, n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0
                      ) -> tuple[float, float, float]:
    """ROC AUC (members = positives, higher score = member) and a bootstrap interval.

    Members and non-members are resampled separately (each side keeps its size); the
    percentile interval of the resampled AUCs is returned. A resample's AUC is computed from
    the pairwise comparison matrix weighted by how often each row was drawn, which is the
    Mann-Whitney form of what `roc_auc_score` computes on the resampled rows.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    pos, neg = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError(f"membership attack: {len(pos)} members and {len(neg)} non-members; "
                         "expected at least 2 of each")
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    auc = float(roc_auc_score(labels, np.r_[pos, neg]))
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    w_pos = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=n_boot)
    w_neg = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=n_boot)
    boots = np.einsum("bi,ij,bj->b", w_pos, wins, w_neg) / (len(pos) * len(neg))
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return auc, float(low), float(high)


def uninformative_note(n_members: int, n_nonmembers: int, min_per_side: int) -> str:
    """Why an attack on so few rows is not informative, or "" when it has enough."""
    if min(n_members, n_nonmembers) >= min_per_side:
        return ""
    return (f"not informative: {n_members} members and {n_nonmembers} non-members, fewer than "
            f"evaluate.mia.min_per_side = {min_per_side} on a side; so few rows make any AUC "
            "and its bootstrap interval look certain (raise finetune.heldout_fraction or "
            "generate more rows)")


def interval_method(cfg) -> str:
    """The AUC interval's method, in words (recorded with every attack)."""
    return (f"stratified percentile bootstrap: members and non-members resampled separately "
            f"with replacement, each keeping its size, {cfg.bootstrap} resamples, "
            f"{cfg.confidence:.0%} interval of the resampled AUCs; rows, not models or seeds, "
            "are resampled")


def roc_points(member_scores, nonmember_scores) -> dict[str, list[float]]:
    """The ROC curve (false and true positive rates) of an attack's scores."""
    import numpy as np
    from sklearn.metrics import roc_curve

    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    fpr, tpr, _ = roc_curve(labels, np.r_[member_scores, nonmember_scores])
    return {"fpr": [round(float(x), 6) for x in fpr], "tpr": [round(float(x), 6) for x in tpr]}


def usable_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Rows with a non-empty text `output` and `instruction` (others cannot be scored)."""
    ok = [r for r in rows if isinstance(r.get("output"), str) and r["output"].strip()
          and isinstance(r.get("instruction"), str)]
    return ok, len(rows) - len(ok)


def sample_rows(rows: list[dict[str, Any]], max_rows: int | None, seed: int
                ) -> list[dict[str, Any]]:
    """At most `max_rows` rows, drawn with `seed` (all rows when there are fewer)."""
    if max_rows is None or len(rows) <= max_rows:
        return list(rows)
    return random.Random(seed).sample(rows, max_rows)


def run_attack(model: str | Path, members: list[dict[str, Any]],
               nonmembers: list[dict[str, Any]], cfg, reference_model: str | None = None,
               seed: int = 0, device: str = "auto") -> MIAResult:
    """Score members and non-members with `model` (and `reference_model`); the AUC record."""
    from teamsrl.llm.transformers_engine import TransformersEngine

    members, skip_m = usable_rows(members)
    nonmembers, skip_n = usable_rows(nonmembers)
    members = sample_rows(members, cfg.max_rows, seed)
    nonmembers = sample_rows(nonmembers, cfg.max_rows, seed + 1)
    engine = TransformersEngine(str(model), device=device, max_batch_size=cfg.batch_size)
    loss_m, loss_n = response_losses(engine, members), response_losses(engine, nonmembers)
    del engine
    raw_m, raw_n = [-x for x in loss_m], [-x for x in loss_n]
    auc, low, high = auc_with_interval(raw_m, raw_n, cfg.bootstrap, cfg.confidence, seed)
    attack, scores, uncalibrated = "loss", (raw_m, raw_n), None
    if reference_model is not None:
        ref = TransformersEngine(str(reference_model), device=device,
                                 max_batch_size=cfg.batch_size)
        ref_m, ref_n = response_losses(ref, members), response_losses(ref, nonmembers)
        del ref
        scores = ([r - f for r, f in zip(ref_m, loss_m, strict=True)],
                  [r - f for r, f in zip(ref_n, loss_n, strict=True)])
        uncalibrated = {"auc": auc, "ci_low": low, "ci_high": high}
        auc, low, high = auc_with_interval(*scores, cfg.bootstrap, cfg.confidence, seed)
        attack = "loss_calibrated"
    note = uninformative_note(len(members), len(nonmembers), cfg.min_per_side)
    return MIAResult(
        informative=not note, note=note, interval_method=interval_method(cfg),
        auc=auc, ci_low=low, ci_high=high, confidence=cfg.confidence,
        n_members=len(members), n_nonmembers=len(nonmembers), attack=attack,
        member_loss_mean=sum(loss_m) / len(loss_m),
        nonmember_loss_mean=sum(loss_n) / len(loss_n),
        roc=roc_points(*scores), uncalibrated=uncalibrated, model=str(model),
        reference_model=str(reference_model) if reference_model else None,
        skipped_rows=skip_m + skip_n)


def plot_roc(result: MIAResult, path: str | Path, title: str = "Membership-inference attack"
             ) -> Path:
    """The ROC curve with its AUC and interval, beside the chance diagonal, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    label = (f"{result.attack.replace('_', ' ')} attack: AUC {result.auc:.3f} "
             f"[{result.ci_low:.3f}, {result.ci_high:.3f}] ({result.confidence:.0%} CI)")
    ax.plot(result.roc["fpr"], result.roc["tpr"], lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC 0.5, ideal privacy)")
    ax.set_xlim(-0.01, 1.0)  # a perfect attack's vertical at 0 stays visible beside the axis
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (share of non-members flagged)")
    ax.set_ylabel("true positive rate (share of members flagged)")
    ax.set_title(f"{title}\n{result.n_members} members vs {result.n_nonmembers} non-members",
                 fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSON rows of a split file (`split/train.jsonl`, `split/heldout.jsonl`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"membership attack: {str(path)!r} not found; expected the "
                                "fine-tune's split file (written by `teamsrl finetune`)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
