"""What a person reads of a generation run, and the validity figures of `teamsrl compare`:
the evolution chains (first seeds in seed order, every step's fate, near-duplicates shown),
the share of kept rows judged valid (recorded validity against the run's threshold, unjudged rows
through the injected scorer), and the W&B table logged at the end of `teamsrl generate`.
The rows are the report fixture's (tests/fixtures/report_run/generate/<arm>/)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from teamsrl.generation.chains import CHAIN_COLUMNS, DEDUPED, chain_steps, shorten
from teamsrl.generation.compare import (
    JudgeUsed,
    compare_table,
    recorded_judge,
    run_stats,
    share_interval,
    validity_share,
)
from teamsrl.generation.rows import Row, read_rows
from teamsrl.outcomes import Drop, DropKind, Failure, FailureKind
from teamsrl.quality import JudgeFile

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report_run" / "generate"
POLICY = FIXTURE / "policy"


def _final_ids(folder: Path) -> set[str]:
    return {json.loads(line)["row_id"] for line in (folder / "data.jsonl").read_text().splitlines()}


@dataclass
class ScoresByText:
    """A `ValidityScorer` with a validity per text, counting what it was asked to score (the
    share arithmetic is under test here, not the judge)."""

    scores: dict[str, float]
    method: str = "embedding"
    threshold: float = 0.6
    asked: list[list[str]] = field(default_factory=list)

    def validity(self, texts: list[str]) -> list[float]:
        self.asked.append(list(texts))
        return [self.scores[t] for t in texts]


def test_chains_show_the_first_seeds_in_seed_order_and_every_steps_fate():
    steps = chain_steps(read_rows(POLICY / "rows.jsonl"), _final_ids(POLICY))
    # rows.jsonl holds the seeds last-finished first; seed order is their place in the source
    assert [(s.seed_id, s.step) for s in steps] == [
        ("seed_task_9", 0), ("seed_task_9", 1), ("seed_task_9", 2), ("seed_task_9", 3),
        ("seed_task_10", 0), ("seed_task_10", 1), ("seed_task_10", 2), ("seed_task_10", 3),
        ("seed_task_2", 0), ("seed_task_2", 1), ("seed_task_2", 2), ("seed_task_2", 3)]
    fate = {(s.seed_id, s.step): s.outcome for s in steps}
    assert fate[("seed_task_9", 1)] == "kept"
    assert fate[("seed_task_9", 2)] == ("dropped: failed evolution: not an instruction: "
                                        "validity 0.12")
    assert fate[("seed_task_10", 2)] == "dropped: failed evolution: unchanged"
    assert fate[("seed_task_10", 3)] == DEDUPED  # kept in rows.jsonl, not in data.jsonl
    assert fate[("seed_task_2", 2)] == "dropped: answer apology"
    seed = steps[0]
    assert seed.cells() == ["seed_task_9", 0, "seed", "Give three tips for staying healthy.",
                            None, None, ""]
    assert steps[2].cells() == [
        "seed_task_9", 2, "deepening",
        "Here's a rewritten version of the instruction with more depth:", 0.40, 0.12,
        "dropped: failed evolution: not an instruction: validity 0.12"]
    assert steps[6].validity is None  # failed a rule: never judged
    assert len(CHAIN_COLUMNS) == len(seed.cells())
    # without data.jsonl's ids, a row the dedup pass removed cannot be told from a kept one
    assert chain_steps(read_rows(POLICY / "rows.jsonl"))[7].outcome == "kept"


def test_long_rewrites_are_cut_with_an_ellipsis():
    assert shorten("  short  ") == "short"
    cut = shorten("word " * 100, chars=40)
    assert len(cut) <= 40 and cut.endswith("…") and cut.startswith("word word")


def _row(step: int, validity: float | None, text: str, failure: FailureKind | None = None,
         drop: DropKind | None = None) -> Row:
    f = Failure(failure) if failure else None
    d = Drop(DropKind.FAILED_EVOLUTION, str(f)) if f else (Drop(drop) if drop else None)
    return Row(row_id=f"s/{step}", seed_id="s", seed_index=0, step=step, instruction=text,
               validity=validity, reviewer_model="x/some-reviewer", failure=f, drop=d)


def _config(tmp_path: Path, quality: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"env:\n  quality:\n{quality}")
    return path


def test_validity_share_counts_recorded_validity_at_the_runs_threshold(tmp_path):
    kept = [_row(1, 0.9, "a"), _row(2, 0.5, "b"), _row(3, 0.49, "c"),
            _row(4, None, "d"), _row(5, None, "e")]
    steps = kept + [_row(6, 0.1, "f", FailureKind.NOT_INSTRUCTION),
                    _row(7, None, "g", FailureKind.UNCHANGED),
                    _row(8, 0.2, "h", FailureKind.NOT_INSTRUCTION)]
    scorer = ScoresByText({"d": 0.7, "e": 0.55})  # e: valid at 0.5, not at the scorer's 0.6
    config = _config(tmp_path, "    method: embedding\n    threshold: 0.5\n")
    share = validity_share(steps, kept, config, lambda: scorer)
    # a (0.9) and b (0.5, at the threshold) by their recorded validity; d by the scorer
    assert (share.valid, share.kept, share.recorded, share.rescored) == (3, 5, 3, 2)
    assert share.share == pytest.approx(0.6)
    assert scorer.asked == [["d", "e"]]  # only the unjudged kept rows, in one batch
    assert share.recorded_by == JudgeUsed("embedding", 0.5)
    assert share.rescored_by == JudgeUsed("embedding", 0.6)
    assert (share.not_instruction, share.steps) == (2, 8)
    assert share.not_instruction_share == pytest.approx(0.25)
    assert share.method() == (
        "3 kept rows by the validity recorded during generation (embedding judge, valid at >= "
        "0.500); 2 kept rows not judged by the run, scored now (embedding judge, valid at >= "
        "0.600; no LLM query when embedding)")
    assert share.low <= share.share <= share.high


def test_a_run_judged_throughout_loads_no_scorer(tmp_path):
    def refuse():
        raise AssertionError("every kept row carries its validity: nothing to score")

    kept = [_row(1, 0.8, "a"), _row(2, 0.3, "b")]
    share = validity_share(kept, kept, _config(tmp_path, "    threshold: 0.5\n"), refuse)
    assert (share.valid, share.rescored, share.rescored_by) == (1, 0, None)


def test_the_runs_judge_comes_from_its_config_with_auto_resolved_for_its_reviewer(tmp_path):
    weights = JudgeFile.load()
    # no config.yaml: the default (auto); a reviewer the judge was not fitted to -> embedding
    assert recorded_judge(tmp_path / "missing.yaml", "x/other") == JudgeUsed(
        "embedding", weights.threshold("embedding"))
    assert recorded_judge(_config(tmp_path, "    method: embedding\n    threshold: 0.25\n"),
                          "x/other") == JudgeUsed("embedding", 0.25)


def test_the_interval_is_the_bootstrap_over_rows():
    assert share_interval(6, 6) == (1.0, 1.0)
    assert all(math.isnan(v) for v in share_interval(0, 0))
    # resampling the rows themselves gives the same interval as the binomial draws
    rows = np.array([1] * 13 + [0] * 7)
    draws = np.random.default_rng(1).choice(rows, size=(20000, rows.size)).mean(axis=1)
    low, high = share_interval(13, 20)
    assert low == pytest.approx(np.quantile(draws, 0.025), abs=0.051)
    assert high == pytest.approx(np.quantile(draws, 0.975), abs=0.051)
    assert low < 0.65 < high and high - low > 0.3


def test_compare_shows_the_validity_figures_and_how_they_were_judged():
    from embedding_doubles import HashEmbedder

    encode = HashEmbedder().encode
    a, b = run_stats(POLICY, encode), run_stats(FIXTURE / "random", encode)
    cells = {line.split("  ")[0]: line.split()[-2:] for line in compare_table(a, b).splitlines()}
    assert cells["kept rows judged valid: share"] == ["1.000", "0.667"]
    assert cells["steps failed as not an instruction: share"] == ["0.182", "0.000"]
    assert "[1.000, 1.000]" in compare_table(a, b) and "[0.333, 1.000]" in compare_table(a, b)
    assert a["validity"]["not_instruction"] == 2 and b["validity"]["valid"] == 4
    assert compare_table(a, b).splitlines()[-1] == (
        "validity of B: 6 kept rows by the validity recorded during generation (embedding "
        "judge, valid at >= 0.500)")


def test_generation_end_logs_the_chains_as_a_wandb_table(tmp_path, monkeypatch):
    """`finalize` (the end of `teamsrl generate`) logs `generate/chains` to the arm's offline
    W&B run; the table read back from the run's files is `chain_steps` of its rows."""
    from embedding_doubles import HashEmbedder
    from wandb_offline import run_history

    import teamsrl.embeddings
    from teamsrl.config import load_config
    from teamsrl.generation.finalize import finalize
    from teamsrl.layout import GenerationLayout
    from teamsrl.seeds import Seed, SeedSet

    monkeypatch.setattr(teamsrl.embeddings, "shared_embedder", lambda *a: HashEmbedder())
    config = load_config(None, [f"run_dir={tmp_path / 'run'}", "tracking.mode=offline"])
    out = GenerationLayout(tmp_path / "generate" / "policy")
    out.root.mkdir(parents=True)
    rows = read_rows(POLICY / "rows.jsonl")
    seeds = SeedSet([Seed(r.seed_id, r.seed_instruction) for r in rows if r.step == 1], "fixture")
    checkpoint = tmp_path / "policy-checkpoint"  # a policy with no training cost, said so
    checkpoint.mkdir()
    (checkpoint / "ledger.json").write_text("{}")
    summary = finalize(config, out, str(checkpoint), rows, seeds.seeds, seeds, None,
                       "generate-policy")
    history = {k: v for row in run_history(out.root, "generate-policy") for k, v in row.items()}
    assert history["generate/rows_kept"] == summary["rows_kept"]
    assert history["generate/chains/_type"] == "table-file"
    files = sorted(out.root.glob(f"wandb/offline-run-*/files/{history['generate/chains/path']}"))
    logged = json.loads(files[-1].read_text())
    kept_ids = {json.loads(line)["row_id"] for line in out.data.read_text().splitlines()}
    assert logged["columns"] == list(CHAIN_COLUMNS)
    assert logged["data"] == [s.cells() for s in chain_steps(rows, kept_ids)]
    assert history["generate/chain_lines"] == len(logged["data"]) == 12
