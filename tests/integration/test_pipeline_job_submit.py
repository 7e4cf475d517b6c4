"""The quickstart pipeline as a Ray job on a real local head (issue 8, "Must show" 1).

`ray start --head` (token auth, dashboard on 127.0.0.1, 2 CPUs: the Serve replica's
`serving.num_cpus`), then `cluster/submit.sh --config experiments/quickstart.yaml` with a tiny
override (`ray_local_head.TINY_PIPELINE`: simulated LLMs, a tiny Llama to fine-tune; what is
checked is that the stages hand their artefacts on): the job joins the head (`--address auto`), runs
split-seeds -> train-policy -> generate (policy, random) -> finetune and evaluate (both arms) ->
report and SUCCEEDS; its run dir holds the seed split, both datasets, both fine-tuned models and
their eval results (scores, attack, reference loss), and the report with both arms side by side;
the head is stopped. The job runs once per session in the `pipeline_job_run` fixture
(tests/conftest.py), which other tests may reuse.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

STAGES = ["split-seeds", "train-policy", "generate-policy", "generate-random", "finetune-policy",
          "finetune-random", "evaluate-policy", "evaluate-random", "report"]


def test_the_submitted_pipeline_succeeds_and_fills_its_run_dir(pipeline_job_run):
    run_dir, logs = pipeline_job_run.run_dir, pipeline_job_run.logs
    print(f"pipeline job SUCCEEDED in {pipeline_job_run.seconds:.0f} s")
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert [s for s in STAGES if state.get(s, {}).get("done")] == STAGES, state
    # the policy, the two datasets
    assert (run_dir / "policy" / "export" / "spec.json").is_file()
    for arm in ("policy", "random"):
        out = run_dir / "generate" / arm
        assert (out / "data.jsonl").is_file(), arm
        assert (out / "dataset").is_dir() and any((out / "dataset").iterdir()), arm
        assert json.loads((out / "summary.json").read_text())["seeds"] == 4
    # the seed split: disjoint slices, the run's seeds from the right ones
    split = json.loads((run_dir / "seed-split.json").read_text())
    slices = {name: set(ids) for name, ids in split["slices"].items()}
    assert slices["reference"] and not (slices["reference"] & (slices["policy_training"]
                                                                | slices["generation"]))
    assert not slices["policy_training"] & slices["generation"]
    config = (run_dir / "config.yaml").read_text()  # what policy training ran with
    assert f"seed_file: {split['files']['policy_training']}" in config
    for arm in ("policy", "random"):
        seeded = {json.loads(line)["seed_id"]
                  for line in (run_dir / "generate" / arm / "data.jsonl").open()}
        assert seeded <= slices["generation"], arm
    # both fine-tuned models (same steps), their evaluations, the report with both
    steps = set()
    for arm in ("policy", "random"):
        assert (run_dir / "finetune" / arm / "model" / "config.json").is_file(), arm
        steps.add(json.loads((run_dir / "finetune" / arm / "summary.json").read_text())["steps"])
        results = json.loads((run_dir / "eval" / arm / "results.json").read_text())
        assert results["limit"] == 2 and results["tasks"], arm
        mia = json.loads((run_dir / "eval" / arm / "mia.json").read_text())
        assert not mia["informative"] and "not informative" in mia["note"], arm  # 2 a side
        ref = json.loads((run_dir / "eval" / arm / "reference.json").read_text())
        assert {t["id"] for t in ref["per_task"]} <= slices["reference"], arm
        assert ref["n_tasks"] == len(ref["per_task"]) == 4, arm
    assert len(steps) == 1, steps
    page = (run_dir / "report" / "report.md").read_text()
    assert "| | `policy` | `random` |" in page and "fine-tuned minus base" in page
    assert "not informative" in page
    assert {"sft-loss.png", "eval-scores.png", "reference-loss.png", "mia-roc.png"} <= {
        p.name for p in (run_dir / "report").glob("*.png")}
    # the job ended with the report's path (the pipeline's last line)
    assert f"report: {run_dir / 'report' / 'report.md'}" in logs
