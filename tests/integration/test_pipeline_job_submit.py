"""The quickstart pipeline as a Ray job on a real local head (issue 8, "Must show" 1).

`ray start --head` (token auth, dashboard on 127.0.0.1, 2 CPUs: the Serve replica's
`serving.num_cpus`), then `cluster/submit.sh --config experiments/quickstart.yaml` with a tiny
override (`ray_local_head.TINY_PIPELINE`): the job joins the head (`--address auto`), runs
train-policy -> generate (policy, random) -> finetune -> evaluate -> report and SUCCEEDS; its run
dir holds the dataset, the fine-tuned model, the eval results and the report; the head is
stopped. The job runs once per session in the `pipeline_job_run` fixture (tests/conftest.py),
which other tests may reuse.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

STAGES = ["train-policy", "generate-policy", "generate-random", "finetune", "evaluate", "report"]


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
    # the fine-tuned model, the evaluation, the report
    assert (run_dir / "finetune" / "model" / "config.json").is_file()
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["limit"] == 2 and results["tasks"]
    assert (run_dir / "eval" / "mia.json").is_file()
    assert (run_dir / "report" / "report.md").is_file()
    assert list((run_dir / "report").glob("*.png"))
    # the job ended with the report's path (the pipeline's last line)
    assert f"report: {run_dir / 'report' / 'report.md'}" in logs
