"""`python -m teamsrl.prebuild`: the builds that happen on first use, done ahead (`make install`).

- The embedded SmolLM2's plain HF folder, de-quantised from its GGUF into the teamsrl cache
  (`teamsrl.llm.embedded.smollm2_hf_dir`): ~16 s alone on 2 cores.
- DeepSpeed's CPU shared-memory comm op, JIT-compiled into TORCH_EXTENSIONS_DIR by the first CPU
  fine-tune's process group (`teamsrl.finetune.worker.build_cpu_ops`): ~20 s alone.

Both are exactly what first use does, so skipping this only moves the cost there. In a fresh
clone's test run the two landed on the first tests that needed them, each beside the other test
worker's work: test_finetune_deepspeed's fixture took 58 s there against 14 s with both built,
test_finetune_ray 95 s against 56 s (CI logs of 2026-12-02). The two run here side by side.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    from teamsrl.finetune.worker import build_cpu_ops
    from teamsrl.llm.embedded import smollm2_hf_dir

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # a de-quantisation beside a ninja build
        builds = {"SmolLM2 HF folder": pool.submit(smollm2_hf_dir),
                  "DeepSpeed CPU comm op": pool.submit(build_cpu_ops)}
        for name, future in builds.items():
            print(f"prebuild: {name}: {future.result()}")
    print(f"prebuild: done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
