"""`EvaluateConfig`: the `evaluate` section of an experiment config (`teamsrl evaluate`): lm-eval
tasks, the membership attack, and the reference-answer loss.

The defaults are the offline CPU recipe: teamsrl's own smoke tasks (hand-written, shipped in
`teamsrl/evaluate/tasks/`, not the benchmarks). GPU experiments with a hub name lm-eval's
`arc_challenge` and `hellaswag`; `num_fewshot` already holds the paper's shots for them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SMOKE_TASKS = ["teamsrl_arc_smoke", "teamsrl_hellaswag_smoke"]


class MIAConfig(BaseModel):
    """Loss-based membership-inference attack on the fine-tune's train vs held-out rows."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = Field(True, description="run the attack when --model is a fine-tune folder "
                          "(one with split/train.jsonl and split/heldout.jsonl)")
    calibrate: bool = Field(True, description="attack score = base-model loss minus fine-tuned "
                            "loss (reference calibration) instead of minus the fine-tuned loss")
    base_model: str | None = Field(None, description="reference model of the calibration; "
                                   "default: the base model recorded in the fine-tune's "
                                   "spec.json, else finetune.base_model")
    max_rows: int | None = Field(256, ge=2, description="rows per side (members, non-members) "
                                 "drawn with the run seed; null: all rows")
    batch_size: int = Field(8, ge=1, description="rows per scoring forward pass")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples of the AUC's interval")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the "
                              "bootstrap interval")
    min_per_side: int = Field(30, ge=2, description="members and non-members each needed for "
                              "the AUC to be informative; with fewer the attack still runs, and "
                              "its results and the report say the figure is not informative")


class ReferenceConfig(BaseModel):
    """The loss of human-written reference answers (`teamsrl evaluate --reference FILE`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    max_tasks: int | None = Field(None, ge=2, description="score only the first N reference "
                                  "tasks of the file (smoke runs); null: all")
    batch_size: int = Field(8, ge=1, description="tasks per scoring forward pass")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples (over tasks) of the "
                           "intervals")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the "
                              "bootstrap intervals")


class EvaluateConfig(BaseModel):
    """lm-evaluation-harness tasks and the membership attack of `teamsrl evaluate`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    tasks: list[str] = Field(default_factory=lambda: list(SMOKE_TASKS), min_length=1,
                             description="lm-eval task names; default: the offline smoke sets "
                             "(not the benchmarks); with a hub: arc_challenge, hellaswag")
    num_fewshot: dict[str, int] = Field(
        default_factory=lambda: {"arc_challenge": 25, "hellaswag": 10},
        description="few-shot examples per task (the paper's 25 for ARC, 10 for HellaSwag); "
        "tasks not listed use their own default (0 for the smoke sets)")
    metric: str = Field("acc_norm", min_length=1, description="the score reported per task "
                        "(lm-eval metric name); tasks without it fall back to acc")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N examples of "
                              "each task (smoke runs)")
    batch_size: int = Field(8, ge=1, description="lm-eval batch size")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs; "
                                                   "auto: cuda when available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="model weights' dtype; auto: float32 on CPU, bfloat16 on GPUs")
    include_path: list[str] = Field(default_factory=list, description="extra folders of lm-eval "
                                    "task YAML files (the smoke tasks are always included)")
    mia: MIAConfig = Field(default_factory=MIAConfig, description="membership-inference attack")
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig, description="loss of "
                                       "human-written reference answers, base vs fine-tuned")

    @field_validator("num_fewshot")
    @classmethod
    def _shots(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"expected shots >= 0, got {bad}")
        return value
