"""`teamsrl report` on a synthetic run folder (tests/fixtures/report_run, every stage's format,
both arms fine-tuned and evaluated) and on folders with inputs missing or broken: the page is
written, the PNGs are real images, the Markdown names every figure, the reward panel lists every
component (validity included), each arm's validity share and first seeds' evolution chains are
tables, both arms stand side by side with their "fine-tuned minus base" reference loss, an attack
on too few non-members is called not informative, and a missing input becomes a note, not a
crash."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report_run"
FIGURES = {"ppo-return.png", "actions.png", "diversity-vs-queries.png", "sft-loss.png",
           "eval-scores.png", "reference-loss.png", "mia-roc.png"}


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def _check_image(path: Path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400, (path.name, pixels.shape)
    gray = pixels[..., :3].mean(axis=-1)
    assert gray.std() > 0.05, path.name  # not a blank canvas
    assert (gray < 0.5).mean() > 0.005, path.name  # axes, text and curves were drawn


def test_report_draws_every_figure_and_names_it(tmp_path, capsys):
    from wandb_offline import run_history

    from teamsrl.cli import main

    run = _run_dir(tmp_path)
    assert main(["report", str(run), "--set", "tracking.mode=offline"]) == 0
    page = run / "report" / "report.md"
    assert capsys.readouterr().out.strip() == str(page)
    assert {p.name for p in (run / "report").glob("*.png")} == FIGURES
    for png in FIGURES:
        _check_image(run / "report" / png)
    text = page.read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    assert linked == FIGURES
    assert "7 of 7 figures drawn" in text
    assert "1 unreadable line(s) of train-policy-metrics.jsonl skipped" in text
    assert "| policy | 150 | 240 | 216 | 1.60 |" in text  # generation table, queries per row
    # the reward panel draws every `reward/*` column of the metrics, the judge's validity too
    assert ("Right: each reward component (cost, failure, graded, novelty, validity, verdict) "
            "averaged per env step") in text
    assert ("| policy | 1.000 (6 of 6) | [1.000, 1.000] | 0.182 (2 of 11) | 6 kept rows by the "
            "validity recorded during generation (embedding judge, valid at &gt;= 0.500) |") in text
    assert "| random | 0.667 (4 of 6) | [0.333, 1.000] | 0.000 (0 of 8) |" in text
    chains = text.split("Evolution chains")[1]
    assert chains.index("### `policy`") < chains.index("### `random`")
    assert ("| seed_task_9 | 3 | concretizing | Give three tips \\| for a night-shift nurse<br>"
            "staying healthy, each under 20 words. | 0.770 | 0.880 | kept |") in chains
    assert "Describe how &lt;b&gt;leaves&lt;/b&gt; turn" in chains
    assert ("| seed_task_2 | 2 | deepening | Name two rivers in Europe that cross a capital city "
            "and the capitals they cross. | 0.720 | 0.890 | dropped: answer apology |") in chains
    assert "| 0.800 | 0.910 | dropped: near-duplicate (removed at the end) |" in chains
    assert "seed_task_30" not in chains  # the first three seeds only
    assert "not** ARC or HellaSwag" in text
    # the paper's table: one column per arm, every figure of both
    assert "| | `policy` | `random` |" in text
    assert "| fine-tuning steps (same base) | 30 | 30 |" in text
    assert ("| teamsrl_arc_smoke | 0.667 ± 0.098 (acc_norm, n=24) | 0.625 ± 0.101 (acc_norm, "
            "n=24) |") in text
    assert ("| **reference loss, fine-tuned minus base** | **-0.412 [-0.530, -0.301]** | "
            "**-0.142 [-0.251, -0.040]** |") in text
    assert ("| membership attack AUC | 0.642 [0.515, 0.756] (40 members vs 40 non-members) | "
            "1.000 [1.000, 1.000] (51 members vs 6 non-members): **not informative** |") in text
    assert "- `policy`: 30 logged steps" in text and "- `random`: 30 logged steps" in text
    assert "**The figure is not informative: 51 members and 6 non-members" in text
    assert "Interval: stratified percentile bootstrap" in text  # the method is stated
    assert "Method: mean over 35 tasks" in text
    logged = {k: v for row in run_history(run, "report") for k, v in row.items()}
    assert logged["report/figures"] == 7
    for png in FIGURES:  # each figure is a W&B image in the offline run
        assert logged[f"report/{Path(png).stem}/_type"] == "image-file", png


def test_missing_inputs_skip_their_figures_with_a_note(tmp_path):
    from teamsrl.evaluate.report import build_report

    run = _run_dir(tmp_path)
    build_report(run)
    shutil.rmtree(run / "generate" / "random")
    (run / "generate" / "policy" / "summary.json").write_text("{not json")
    shutil.rmtree(run / "finetune")
    for arm in ("policy", "random"):
        (run / "eval" / arm / "mia.json").write_text('{"auc": 0.5}')
        (run / "eval" / arm / "reference.json").unlink()
    shutil.rmtree(run / "eval" / "random")
    text = build_report(run).read_text()
    assert {p.name for p in (run / "report").glob("*.png")} == {
        "ppo-return.png", "actions.png", "eval-scores.png"}  # stale PNGs were removed
    assert "3 of 7 figures drawn" in text
    assert "`random`: generate/random/summary.json not found" in text
    assert "`policy`: generate/policy/summary.json unreadable" in text
    assert "- `random`: not shown (FileNotFoundError:" in text  # no rows.jsonl: a note
    assert "| policy | 1.000 (6 of 6) |" in text  # the other arm's rows still count
    assert "finetune/metrics.jsonl not found" in text
    assert "- `policy`: eval/policy/mia.json unreadable" in text
    assert "- `random`: eval/random/results.json not found." in text
    assert "no eval/<arm>/reference.json" in text


def test_empty_run_dir_gives_a_page_of_notes(tmp_path):
    from teamsrl.evaluate.report import build_report

    text = build_report(tmp_path).read_text()
    assert "0 of 7 figures drawn" in text and "![" not in text
    assert text.count("_Skipped") >= 5


def test_rows_the_run_did_not_judge_are_scored_by_the_injected_judge(tmp_path):
    """An older run (no `validity` in its rows): its kept rows go through the scorer `rescore`
    gives (the embedding judge by default), and the page says so."""
    import json
    from types import SimpleNamespace

    from teamsrl.evaluate.report import build_report

    run = _run_dir(tmp_path)
    for name in ("rows.jsonl", "data.jsonl"):
        path = run / "generate" / "random" / name
        records = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "validity": None} if "validity" in r else r)
                                + "\n" for r in records))
    asked: list[str] = []

    def score(texts: list[str]) -> list[float]:
        asked.extend(texts)
        return [0.1 if t.startswith(("Sure", "including")) else 0.9 for t in texts]

    text = build_report(run, rescore=lambda: SimpleNamespace(
        method="embedding", threshold=0.47, validity=score)).read_text()
    assert len(asked) == 6  # the random arm's kept rows; the policy arm's are judged
    assert ("| random | 0.667 (4 of 6) | [0.333, 1.000] | 0.000 (0 of 8) | 6 kept rows not "
            "judged by the run, scored now (embedding judge, valid at &gt;= 0.470; no LLM query "
            "when embedding) |") in text
    assert "| seed_task_9 | 2 | breadth | Sure! Here are three tips for staying healthy. | " \
           "0.550 | – | kept |" in text


def test_report_on_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    from teamsrl.cli import main

    assert main(["report", str(tmp_path / "nope"), "--set", "tracking.mode=disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("teamsrl report: error: RUN_DIR") and "not a folder" in err
    assert "\n" not in err


def test_a_skipped_attack_shows_its_reason(tmp_path):
    import json

    from teamsrl.evaluate.report import build_report

    run = _run_dir(tmp_path)
    for arm in ("policy", "random"):
        results = json.loads((run / "eval" / arm / "results.json").read_text())
        results["mia_skipped"] = "5 scorable training rows and 0 held-out rows in 'x/split'"
        (run / "eval" / arm / "results.json").write_text(json.dumps(results))
        (run / "eval" / arm / "mia.json").unlink()
    text = build_report(run).read_text()
    assert ("_Skipped: membership attack skipped: 5 scorable training rows and 0 held-out rows "
            "in 'x/split'._") in text
    assert "eval-scores.png" in text and "mia-roc.png" not in text


def test_a_standalone_evaluation_is_one_column(tmp_path):
    """`teamsrl finetune --out RUN/finetune` + `teamsrl evaluate` (the standalone defaults):
    finetune/ and eval/ hold one model's files, shown as one column."""
    from teamsrl.evaluate.report import build_report

    run = _run_dir(tmp_path)
    for stage in ("finetune", "eval"):
        shutil.rmtree(run / stage / "random")
        for f in (run / stage / "policy").iterdir():
            f.rename(run / stage / f.name)
        (run / stage / "policy").rmdir()
    text = build_report(run).read_text()
    evaluation = text.split("Fine-tuned models side by side")[1]
    assert "| | `fine-tuned` |" in text and "`random`" not in evaluation
    assert "| **reference loss, fine-tuned minus base** | **-0.412 [-0.530, -0.301]** |" in text
    assert "7 of 7 figures drawn" in text
