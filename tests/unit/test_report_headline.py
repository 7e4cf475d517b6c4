"""`teamsrl report` on a `benchmarks/headline.py` work dir: it draws the quality-vs-queries
figure from `headline.json` (a real PNG, linked from the page) and states the headline ratios
with their intervals; without matplotlib the page says so; an ordinary run gets no headline.

The JSON's figures come from headline.py's own `headline` and `reference_headline` on made-up
rows (what is tested is the reading and drawing, not the numbers)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

ARMS = ("policy", "frequency", "random")
BUDGETS = [8, 16, 32]
SEEDS = [f"seed_{i}" for i in range(4)]
VALID_EVERY = {"policy": 1, "frequency": 2, "random": 3}  # every n-th row is judged valid


def _rows(arm: str, k: int) -> dict:
    """Per seed: 3 rows of 4 expert queries each, (expert q, reviewer q, kept, valid, text,
    record) as `headline.seed_rows` gives them."""
    n = VALID_EVERY[arm]
    return {sid: [(4, 2, True, (3 * s + i + k) % n == 0, f"{arm} {sid} {i}", {})
                  for i in range(3)] for s, sid in enumerate(SEEDS)}


def write_headline_json(work: Path) -> dict:
    """A headline work dir's `headline.json`, shaped as `headline.main` writes it."""
    import headline

    train = [10, 14]
    rows = {arm: [_rows(arm, k) for k in range(len(train))] for arm in ARMS}
    figs = headline.headline(train, rows, SEEDS, BUDGETS, amortise_rows=1000, n_boot=50)
    per_run = {arm: [[{"loss": 2.0 - 0.1 * i - (0.2 if arm == "policy" else 0.0)}
                      for i in range(len(BUDGETS))] for _ in train] for arm in ARMS}
    ref = headline.reference_headline(per_run, train, BUDGETS)
    gain = {"policy": 0.5, "frequency": 0.2, "random": 0.0}
    returns = headline.returns_figures(
        {arm: [{sid: s + gain[arm] + 0.25 * k for s, sid in enumerate(SEEDS)}
               for k in range(len(train))] for arm in ARMS}, SEEDS, n_boot=50)
    record = {"command": "benchmarks/headline.py --work-dir W", "commit": "0123456789abcdef",
              "date": "2025-01-01T00:00:00+00:00", "config": {"budgets": "8,16,32"},
              "summary": {"valid_rows": figs, "reference_loss": ref, "png": "x",
                          "episode_return": returns,
                          "cost_unit": "engine queries"},
              "raw": {"generation_seed_ids": SEEDS}}
    work.mkdir(parents=True, exist_ok=True)
    (work / "headline.json").write_text(json.dumps(record, indent=1))
    return record


def test_report_draws_the_headline_and_states_its_ratio(tmp_path, capsys):
    import matplotlib.image

    from teamsrl.cli import main

    work = tmp_path / "headline"
    figs = write_headline_json(work)["summary"]["valid_rows"]
    ratio, (low, high) = figs["ratio_training_included"], figs["ci95"]["ratio_training_included"]
    assert ratio != figs["ratio_generation_only"]  # the test can tell the two apart
    assert main(["report", str(work), "--set", "tracking.mode=disabled"]) == 0
    page = Path(capsys.readouterr().out.strip())
    png = work / "report" / "headline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 1200, pixels.shape  # two panels
    gray = pixels[..., :3].mean(axis=-1)
    assert gray.std() > 0.05 and (gray < 0.5).mean() > 0.005  # drawn on, not a blank canvas
    text = page.read_text()
    assert "headline.png" in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "1 of 8 figures drawn" in text
    assert (f"| **(a) policy / baseline expert queries, training included** | **{ratio:.3f}** "
            f"| **[{low:.3f}, {high:.3f}]** |") in text
    assert (f"| break-even dataset size (judged-valid rows) | "
            f"{figs['break_even_valid_rows']:.3f} |") in text
    assert text.index("Headline") < text.index("Policy training (PPO)")  # the headline first
    returns = write_headline_json(work)["summary"]["episode_return"]
    m = returns["mean_return"]
    assert "over 8 held-out generation episodes an arm" in text  # 2 runs x 4 seeds
    assert (f"| trained policy (sampled) | {m['policy']:.3f} | [{returns['ci95']['policy'][0]:.3f}"
            f", {returns['ci95']['policy'][1]:.3f}] | 0.500 | [0.500, 0.500] |") in text
    assert f"| random (Evol-Instruct) | {m['random']:.3f} |" in text


def test_without_matplotlib_the_page_says_so(tmp_path, monkeypatch):
    from teamsrl.evaluate.report import build_report

    work = tmp_path / "headline"
    figs = write_headline_json(work)["summary"]["valid_rows"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    text = build_report(work).read_text()
    assert "_Figure not drawn: matplotlib is not installed" in text
    assert f"**{figs['ratio_training_included']:.3f}**" in text  # the table still shows
    assert not (work / "report" / "headline.png").exists()


@pytest.mark.parametrize("leftover", [None, "headline.png"])
def test_a_run_without_headline_json_has_no_headline_figures(tmp_path, leftover):
    from teamsrl.evaluate.report import build_report

    if leftover:  # an older work dir: the benchmark's PNG but not its JSON
        (tmp_path / leftover).write_bytes(b"\x89PNG\r\n\x1a\n")
    text = build_report(tmp_path).read_text()
    assert f"0 of {8 if leftover else 7} figures drawn" in text and "![" not in text
    assert ("Headline" in text) == bool(leftover)
    if leftover:
        assert "headline.png is here but not headline.json; rerun" in text
