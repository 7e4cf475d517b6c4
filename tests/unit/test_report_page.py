"""`teamsrl report` on a synthetic run folder (tests/fixtures/report_run, every stage's format)
and on folders with inputs missing or broken: the page is written, the PNGs are real images,
the Markdown names every figure, and a missing input becomes a note, not a crash."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report_run"
FIGURES = {"ppo-return.png", "actions.png", "diversity-vs-queries.png", "sft-loss.png",
           "eval-scores.png", "mia-roc.png"}


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
    assert "6 of 6 figures drawn" in text
    assert "1 unreadable line(s) of train-policy-metrics.jsonl skipped" in text
    assert "| policy | 150 | 240 | 216 | 1.60 |" in text  # generation table, queries per row
    assert "AUC 0.642" in text and "not** ARC or HellaSwag" in text
    logged = {k: v for row in run_history(run, "report") for k, v in row.items()}
    assert logged["report/figures"] == 6
    for png in FIGURES:  # each figure is a W&B image in the offline run
        assert logged[f"report/{Path(png).stem}/_type"] == "image-file", png


def test_missing_inputs_skip_their_figures_with_a_note(tmp_path):
    from teamsrl.evaluate.report import build_report

    run = _run_dir(tmp_path)
    build_report(run)
    shutil.rmtree(run / "generate" / "random")
    (run / "generate" / "policy" / "summary.json").write_text("{not json")
    (run / "finetune" / "metrics.jsonl").unlink()
    (run / "eval" / "mia.json").write_text('{"auc": 0.5}')
    text = build_report(run).read_text()
    assert {p.name for p in (run / "report").glob("*.png")} == {
        "ppo-return.png", "actions.png", "eval-scores.png"}  # stale PNGs were removed
    assert "3 of 6 figures drawn" in text
    assert "`random`: generate/random/summary.json not found" in text
    assert "`policy`: generate/policy/summary.json unreadable" in text
    assert "finetune/metrics.jsonl not found" in text
    assert "eval/mia.json unreadable" in text


def test_empty_run_dir_gives_a_page_of_notes(tmp_path):
    from teamsrl.evaluate.report import build_report

    text = build_report(tmp_path).read_text()
    assert "0 of 6 figures drawn" in text and "![" not in text
    assert text.count("_Skipped") >= 5


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
    results = json.loads((run / "eval" / "results.json").read_text())
    results["mia_skipped"] = "5 scorable training rows and 0 held-out rows in 'x/split'"
    (run / "eval" / "results.json").write_text(json.dumps(results))
    (run / "eval" / "mia.json").unlink()
    text = build_report(run).read_text()
    assert "_Skipped: 5 scorable training rows and 0 held-out rows in 'x/split'._" in text
    assert "eval-scores.png" in text and "mia-roc.png" not in text
