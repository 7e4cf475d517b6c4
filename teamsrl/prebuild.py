"""`python -m teamsrl.prebuild`: the build that happens on first use, done ahead (`make install`).

The embedded SmolLM2's plain HF folder, de-quantised from its GGUF into the teamsrl cache
(`teamsrl.llm.embedded.smollm2_hf_dir`): ~20 s of one core, alone. It is exactly what first use
does, so skipping this only moves the cost there: in a fresh clone's test run it landed on the
first tests that needed it, beside the other test worker's work (CI logs of 2026-12-02).

DeepSpeed's CPU shared-memory comm op, which this built too until 2026-12-03 (40 s of wall,
71 s of CPU), is no longer built at all: CPU fine-tunes skip it
(`teamsrl.finetune.worker._skip_the_shm_comm_op`).
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    from teamsrl.llm.embedded import smollm2_hf_dir

    start = time.perf_counter()
    print(f"prebuild: SmolLM2 HF folder: {smollm2_hf_dir()}")
    print(f"prebuild: done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
