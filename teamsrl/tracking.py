"""W&B tracking (offline unless the config says online), plus a local JSONL of the same metrics.

Each stage opens one run per job type in the run dir; the W&B run id is kept in
`<run_dir>/wandb-<job>.id`, so `--resume` continues the same W&B run. The JSONL copy
(`<run_dir>/<job>-metrics.jsonl`) is what `teamsrl report` reads, with or without W&B.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class Tracker:
    """Log metrics to W&B and to `<run_dir>/<job>-metrics.jsonl`, one row per step."""

    def __init__(self, config, job_type: str, resume: bool = False) -> None:
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / f"{job_type}-metrics.jsonl"
        if not resume:
            self.jsonl.unlink(missing_ok=True)
        self.run = None
        mode = config.tracking.mode
        if mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled":
            import wandb

            id_file = self.run_dir / f"wandb-{job_type}.id"
            run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
            self.run = wandb.init(
                project=config.tracking.project, group=config.tracking.group,
                name=f"{config.name}-{job_type}", job_type=job_type, dir=str(self.run_dir),
                mode=mode, id=run_id, resume="allow" if run_id else None,
                config=config.model_dump(mode="json"), reinit="finish_previous",
            )
            id_file.write_text(self.run.id)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record one step's metrics (NaNs are dropped from W&B, kept as null in JSONL)."""
        clean = {k: v for k, v in metrics.items() if not _is_nan(v)}
        line = json.dumps({"step": step, **{k: (None if _is_nan(v) else v)
                                            for k, v in metrics.items()}}) + "\n"
        append_line(self.jsonl, line)
        if self.run is not None:
            self.run.log(clean, step=step)

    def finish(self) -> None:
        """Close the W&B run (its offline files stay under the run dir)."""
        if self.run is not None:
            self.run.finish()
            self.run = None


class MetricsWriteError(RuntimeError):
    """A metrics line could not be written (disk full, read-only run dir)."""


def append_line(path: Path, line: str) -> None:
    """Append one whole line or nothing: a failed write (e.g. disk full) is cut back to the
    previous end, so earlier lines stay intact and no half line is left for a resume to trip on."""
    size = path.stat().st_size if path.exists() else 0
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
    except OSError as e:
        try:
            if path.exists() and path.stat().st_size > size:
                os.truncate(path, size)
        except OSError:
            pass
        raise MetricsWriteError(f"metrics file {str(path)!r}: write failed ({e.strerror or e}); "
                                f"the {size} bytes written before are intact") from e


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
