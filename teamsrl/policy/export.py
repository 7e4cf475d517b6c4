"""The trained policy as generation loads it: RLModule state + observation spec, no Algorithm.

    <run_dir>/policy/export/
        rl_module/     RLModule checkpoint (RLModule.from_checkpoint loads it alone)
        spec.json      action names, embedder, horizon, observation size, source iteration

`ExportedPolicy.action_probabilities(obs)` gives the same numbers as the trained module.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SPEC = "spec.json"
MODULE = "rl_module"


@dataclass(frozen=True)
class PolicySpec:
    """What an exported policy's observations and actions mean (`spec.json`)."""

    action_names: list[str]
    embedder: str
    horizon: int
    observation_size: int
    iteration: int
    seed: int
    hidden_sizes: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        """The `spec.json` content."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PolicySpec:
        """Read `spec.json` content; a missing field is an error that names it."""
        missing = [k for k in ("action_names", "embedder", "horizon", "observation_size",
                               "iteration", "seed") if k not in data]
        if missing:
            raise ValueError(f"{SPEC}: missing field(s) {missing}; re-export the policy with "
                             "`teamsrl train-policy --resume --set policy.iterations=0`")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class ExportedPolicy:
    """A loaded policy: its RLModule and what its observations and actions mean."""

    module: object
    spec: PolicySpec

    @property
    def action_names(self) -> list[str]:
        """Action names in index order."""
        return list(self.spec.action_names)

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """Softmax of the module's action logits for a batch of observations."""
        import torch

        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim == 1:
            obs = obs[None]
        if obs.shape[-1] != self.spec.observation_size:
            raise ValueError(f"observation size {obs.shape[-1]}: expected "
                             f"{self.spec.observation_size} for this policy")
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.from_numpy(obs)})
            return torch.softmax(out["action_dist_inputs"], dim=-1).numpy()

    def act(self, obs: np.ndarray, greedy: bool = True, rng: np.random.Generator | None = None
            ) -> np.ndarray:
        """Actions for a batch of observations: argmax, or sampled with `rng`."""
        probs = self.action_probabilities(obs)
        if greedy:
            return probs.argmax(-1)
        rng = rng or np.random.default_rng(0)
        return np.array([rng.choice(len(p), p=p / p.sum()) for p in probs])


def export_policy(algo, out_dir: str | Path, spec: PolicySpec) -> Path:
    """Write the algorithm's default RLModule and the spec (atomically replaced)."""
    out_dir = Path(out_dir).resolve()  # RLlib's save_to_path wants an absolute path (a URI)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    module = algo.get_module()
    module.save_to_path(str(tmp / MODULE))
    (tmp / SPEC).write_text(json.dumps(spec.to_json(), indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def load_policy(path: str | Path) -> ExportedPolicy:
    """Load an exported policy (a run dir, its `policy/export`, or the export folder itself)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(path)
    for candidate in (path, path / "export", path / "policy" / "export"):
        if (candidate / SPEC).is_file():
            spec = PolicySpec.from_json(json.loads((candidate / SPEC).read_text()))
            module = RLModule.from_checkpoint(str((candidate / MODULE).resolve()))
            return ExportedPolicy(module, spec)
    raise FileNotFoundError(f"policy {str(path)!r}: no {SPEC} found there, in export/ or in "
                            "policy/export/ — run `teamsrl train-policy` first")
