"""One typed config per experiment: YAML in, validated models out, `--set a.b=c` overrides.

Every stage's config sits beside its stage (`teamsrl.llm.config.LLMConfig`,
`teamsrl.actions.ActionSetConfig`, ...); this module composes them into `ExperimentConfig` and
turns any validation failure into one `ConfigError` that names the key, the value and what was
expected — before any model is loaded or any Ray worker starts. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from envs.config import EnvConfig
from teamsrl.actions import ActionSetConfig
from teamsrl.evaluate.config import EvaluateConfig
from teamsrl.finetune.config import FinetuneConfig
from teamsrl.generation.config import GenerateConfig
from teamsrl.llm.config import LLMConfig
from teamsrl.policy.config import PolicyConfig
from teamsrl.seed_split import SplitConfig
from teamsrl.serving.config import SELF_BATCHING_ENGINES, ServeConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names key, value and expectation."""


class TrackingConfig(BaseModel):
    """Experiment tracking (W&B)."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field("teamsrl", description="W&B project")
    mode: str = Field("offline", pattern="^(online|offline|disabled)$",
                      description="W&B mode; offline unless you opt in")
    group: str | None = Field(None, description="W&B group (sweeps set one per sweep)")


class ExperimentConfig(BaseModel):
    """A whole experiment: one YAML file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name: str = Field("quickstart", min_length=1, description="experiment name")
    seed: int = Field(543, ge=0, description="run seed; every request's seed derives from it")
    run_dir: str = Field("runs/quickstart", description="where every artefact of the run goes")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="models, cache, ledger")
    actions: ActionSetConfig = Field(default_factory=ActionSetConfig, description="action set")
    split: SplitConfig = Field(default_factory=SplitConfig, description="the pipeline's seed "
                               "split: policy-training seeds, generation seeds, reference tasks")
    env: EnvConfig = Field(default_factory=EnvConfig, description="the instruction MDP: "
                           "horizon, seed pool, embedder, reward weights")
    serving: ServeConfig = Field(default_factory=ServeConfig, description="Ray Serve app of "
                                 "the expert and reviewer (replicas, batching, HTTP route)")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="RLlib PPO policy "
                                 "training (stage 1)")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="dataset "
                                     "generation from the policy or the random baseline "
                                     "(stage 2)")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig,
                                     description="DeepSpeed ZeRO fine-tuning (stage 3)")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="lm-eval "
                                     "tasks and the membership-inference attack (stage 4)")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="W&B")

    @model_validator(mode="after")
    def _forced_actions_exist(self) -> ExperimentConfig:
        names = self.actions.names()
        for step, name in self.generate.forced_actions.items():
            if name not in names:
                raise ValueError(f"key 'generate.forced_actions.{step}' = {name!r}: expected "
                                 f"one of the action set's operations {names}")
        return self

    @model_validator(mode="after")
    def _concurrent_batches_need_a_batching_engine(self) -> ExperimentConfig:
        n = self.serving.max_concurrent_batches
        in_process = [f"llm.{role}.engine = {getattr(self.llm, role).engine!r}"
                      for role in ("expert", "reviewer")
                      if getattr(self.llm, role).engine not in SELF_BATCHING_ENGINES]
        if n > 1 and in_process:
            raise ValueError(
                f"key 'serving.max_concurrent_batches' = {n}: expected 1 with "
                f"{' and '.join(in_process)} (an engine in the replica's own process runs "
                f"one batch at a time: concurrent batches would only contend); more than 1 "
                f"needs engines that batch requests themselves: "
                f"{', '.join(SELF_BATCHING_ENGINES)}")
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (['a', 'b'], yaml-parsed c)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. "
                          "llm.expert.max_tokens=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({_one_line(e)})") from None
    return key.strip().split("."), value


def _one_line(error: Exception) -> str:
    """A multi-line parser message (YAML's points at the column) on one line."""
    return " ".join(str(error).split())


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each dotted key in a nested dict (creating sections as needed)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[: i + 1])} is "
                                  f"{child!r}, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from disk, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r}: not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r}: cannot be read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r}: invalid YAML ({_one_line(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top, "
                          f"got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None
                ) -> ExperimentConfig:
    """Load, override and validate an experiment config."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return validate(data, source=str(path) if path else "<defaults>")


def validate(data: dict, source: str = "<config>") -> ExperimentConfig:
    """Validate a dict; the first problems become one readable `ConfigError`."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def format_validation_error(error: ValidationError, source: str) -> str:
    """`config <src>: key llm.expert.max_batch_size = -1: expected >= 1` (one line per problem)."""
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        value = err.get("input")
        if not err["loc"]:  # a whole-config rule: its message names the key itself
            lines.append(err["msg"].replace("Value error, ", ""))
        elif err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r} (value {value!r}); check the spelling or "
                         "remove it")
        else:
            shown = repr(value)  # a section given where a value belongs shows too
            if len(shown) > 80:
                shown = shown[:77] + "..."
            msg = err["msg"].replace("Input should be", "expected").replace("Value error, ", "")
            lines.append(f"key {key!r} = {shown}: {msg}")
    return f"config {source}: " + "; ".join(lines)


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML (what runs record beside their artefacts)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
