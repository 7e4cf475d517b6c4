"""The headline part of the run report, for a `benchmarks/headline.py` work dir: quality vs
expert queries with the bootstrap bands (drawn again from `headline.json`), and the ratios with
their 95% intervals and the break-even size. A run folder without `headline.json` gets no such
section (an ordinary run is not a headline benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teamsrl.evaluate import figures
from teamsrl.evaluate.report_parts import Section, fmt, is_number, md_table, read_json, rel
from teamsrl.layout import RunLayout

TITLE = "Headline: expert queries for an equally good dataset"


def _interval(figs: dict[str, Any], key: str) -> str:
    low, high = (figs.get("ci95") or {}).get(key) or [None, None]
    return f"[{fmt(low)}, {fmt(high)}]" if low is not None or high is not None else "–"


def _value(v: Any, unreached: str = "not reached") -> str:
    """A figure of the JSON; null is an unreached match (infinite, `headline._finite`)."""
    return unreached if v is None else fmt(float(v)) if is_number(v) else str(v)


def headline_table(figs: dict[str, Any], ref: dict[str, Any] | None) -> list[str]:
    """The headline figures of `summary.valid_rows` (and `summary.reference_loss`) as a table."""
    top = figs["budgets"][-1]
    amortise = figs.get("amortise_valid_rows")
    rows = [
        [f"judged-valid rows of the baseline (Evol-Instruct) at {top} expert queries",
         _value(figs.get("target_valid_rows")), "–"],
        ["training queries per policy (expert, warm-up included)",
         _value(figs.get("training_queries")), "–"],
        ["**(a) policy / baseline expert queries, training included**",
         f"**{_value(figs.get('ratio_training_included'))}**",
         f"**{_interval(figs, 'ratio_training_included')}**"],
        ["policy / baseline, generation queries only", _value(figs.get("ratio_generation_only")),
         _interval(figs, "ratio_generation_only")],
        ["frequency-matched / baseline, generation queries only",
         _value(figs.get("frequency_ratio_generation_only")),
         _interval(figs, "frequency_ratio_generation_only")],
        [f"(b) policy / baseline, training amortised over {fmt(amortise)} judged-valid rows",
         _value(figs.get("ratio_amortised")), _interval(figs, "ratio_amortised")],
        ["break-even dataset size (judged-valid rows)",
         _value(figs.get("break_even_valid_rows"), "never"),
         _interval(figs, "break_even_valid_rows")],
        ["break-even dataset size (baseline expert queries)",
         _value(figs.get("break_even_queries"), "never"), _interval(figs, "break_even_queries")],
    ]
    if ref:
        rows.append([f"reference loss: policy / baseline expert queries, training included, to "
                     f"match its loss at {ref.get('target_budget')} queries (no interval)",
                     _value(ref.get("ratio_training_included")), "–"])
    return md_table(["figure", "value", "95% interval"], rows, "lrr")


def returns_table(figs: dict[str, Any]) -> list[str]:
    """`summary.episode_return` (the policy-vs-random comparison) as a table: each arm's mean
    episode return on the held-out generation seeds and its difference from random's."""
    mean = figs["mean_return"]
    rows = []
    for arm, name in (("policy", "trained policy (sampled)"),
                      ("frequency", "frequency-matched random"),
                      ("random", "random (Evol-Instruct)")):
        diff = f"{arm}_minus_random"
        rows.append([name, _value(mean.get(arm)), _interval(figs, arm),
                     "–" if arm == "random" else _value(mean.get(diff)),
                     "–" if arm == "random" else _interval(figs, diff)])
    return md_table(["arm", "mean episode return", "95% interval", "minus random",
                     "95% interval"], rows, "lrrrr")


def headline_sections(run_dir: Path, out: Path) -> list[Section]:
    """The headline section when RUN_DIR is a headline work dir, else none."""
    path = RunLayout.of(run_dir).headline
    if not path.is_file():
        if path.with_suffix(".png").is_file():
            return [Section(TITLE, [f"_Skipped: {path.with_suffix('.png').name} is here but not "
                                    f"{path.name}; rerun the same `benchmarks/headline.py` "
                                    "command (finished units are skipped) to write it._"])]
        return []
    sec = Section(TITLE)
    try:
        record = read_json(path)
        summary = record["summary"]
        figs, ref = summary["valid_rows"], summary.get("reference_loss")
        table = headline_table(figs, ref)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        sec.lines.append(f"_Skipped: {rel(run_dir, path)} unreadable ({type(e).__name__}: {e})._")
        return [sec]
    try:
        sec.figure = figures.quality_vs_queries(figs, ref, out / "headline.png")
        sec.caption = ("Kept rows judged valid vs expert queries, mean over runs with 95% "
                       "bootstrap bands; the policy's x includes its training queries"
                       + ("; right: reference loss after the same fine-tuning steps." if ref
                          else "."))
    except ImportError:
        sec.lines += ["_Figure not drawn: matplotlib is not installed "
                      "(`pip install matplotlib`)._", ""]
    except (KeyError, TypeError, ValueError) as e:  # the table still shows
        sec.lines += [f"_Figure not drawn: {rel(run_dir, path)} has no complete curve "
                      f"({type(e).__name__}: {e})._", ""]
    if not figs.get("target_valid_rows"):
        sec.lines += [f"**The baseline kept no judged-valid row within {figs['budgets'][-1]} "
                      "expert queries: the ratios below compare nothing** (raise --budgets or "
                      "generate.max_seeds).", ""]
    sec.lines += [*table, ""]
    if returns := summary.get("episode_return"):
        try:
            sec.lines += [f"Mean episode return over {returns['episodes_per_arm']} held-out "
                          "generation episodes an arm (the MDP's reward summed over a seed's "
                          "evolution):", "", *returns_table(returns), ""]
        except (KeyError, TypeError) as e:
            sec.lines += [f"_Episode returns unreadable ({type(e).__name__}: {e})._", ""]
    sec.lines += [f"From {rel(run_dir, path)} (commit {str(record.get('commit') or '–')[:12]}, "
                  f"{record.get('date', '–')}). Cost unit: expert engine queries (cache misses, "
                  f"from each unit's own ledger). Intervals: {figs.get('bootstrap', '–')}."]
    return [sec]
