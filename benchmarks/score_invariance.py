"""How much a reviewer score moves with its batch-mates and with torch's thread count, on this CPU.

`TransformersEngine.score` batches requests (left-padded contexts) and runs on however many
threads the load leaves (`teamsrl/cpu.py`). Mathematically neither changes a score; in float32
both can change its last bits, by CPU: the golden and resume tests compare floats to a tolerance
(`tests/golden_run.py`, FLOAT_RTOL) sized from this. On the same real verdict requests
(`rewards.verdict_request` on consecutive bundled seeds, contexts of different lengths), each
request is scored alone at 1 thread (the reference), then in batches of 2, 4 and 8 at 1 thread,
then alone at 2 threads. It prints, per arm, the largest difference from the reference of a
candidate's log-probability (nats) and of the verdict (P("Not Equal"), relative).

Each environment variant runs in a fresh interpreter (the knobs are read at start-up): `default`,
and MKL's conditional reproducibility with torch's own kernels held to AVX2
(`MKL_CBWR=AVX2,STRICT ATEN_CPU_CAPABILITY=avx2`), which make results independent of the CPU's
instruction set where they can.

    .venv/bin/python benchmarks/score_invariance.py --requests 16 \\
        --out benchmarks/results/score_invariance.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import ResultsFile, add_out_argument, cpu_vector_flags  # noqa: E402
from score_speed import bundled_seeds, verdict_requests  # noqa: E402

VARIANTS = {"default": {},
            "mkl_cbwr_avx2_strict+aten_avx2": {"MKL_CBWR": "AVX2,STRICT",
                                               "ATEN_CPU_CAPABILITY": "avx2"}}
BATCHES = (2, 4, 8)


def measure(n: int) -> dict:
    """The drift of each arm from the 1-thread, one-request-at-a-time reference."""
    import torch

    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.transformers_engine import TransformersEngine
    from teamsrl.rewards import VERDICT_CANDIDATES

    requests = verdict_requests(bundled_seeds(), n)
    engine = TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=max(BATCHES),
                                adaptive_threads=False)
    not_equal = VERDICT_CANDIDATES.index("Not Equal")

    def scored(threads: int, batch: int) -> list:
        torch.set_num_threads(threads)
        out = []
        for i in range(0, n, batch):
            out += engine.score(requests[i : i + batch])
        return out

    reference = scored(1, 1)
    arms = {f"batch_{b}_1_thread": (1, b) for b in BATCHES} | {"alone_2_threads": (2, 1)}
    drift = {}
    for name, (threads, batch) in arms.items():
        got = scored(threads, batch)
        nats = max(abs(a - b) for g, r in zip(got, reference, strict=True)
                   for a, b in zip(g.logprobs, r.logprobs, strict=True))
        rel = max(abs(g.probabilities()[not_equal] / r.probabilities()[not_equal] - 1)
                  for g, r in zip(got, reference, strict=True))
        drift[name] = {"max_abs_logprob_nats": nats, "max_rel_verdict": rel,
                       "requests_changed": sum(g.logprobs != r.logprobs
                                               for g, r in zip(got, reference, strict=True))}
    prompt_tokens = [r.prompt_tokens for r in reference]
    return {"requests": n, "prompt_tokens_min_max": [min(prompt_tokens), max(prompt_tokens)],
            "drift": drift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="verdict requests")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                        help="(internal) measure in this process and print JSON")
    add_out_argument(parser, "score_invariance")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.requests)))
        return
    results = ResultsFile(args.out, vars(args))
    summary: dict = {"cpu_flags": cpu_vector_flags()}
    for name, env in VARIANTS.items():
        done = subprocess.run([sys.executable, __file__, "--requests", str(args.requests),
                               "--variant", name], env=os.environ | env, capture_output=True,
                              text=True, check=True)
        summary[name] = {"env": env, **json.loads(done.stdout.strip().splitlines()[-1])}
    print(f"{'variant':32} {'arm':18} {'max |dlogp| nats':>17} {'max rel verdict':>16} "
          f"{'changed':>8}")
    for name in VARIANTS:
        for arm, d in summary[name]["drift"].items():
            print(f"{name:32} {arm:18} {d['max_abs_logprob_nats']:>17.2e} "
                  f"{d['max_rel_verdict']:>16.2e} {d['requests_changed']:>5}/{args.requests}")
    print("(reference: each request alone at 1 thread; prompt tokens "
          f"{summary['default']['prompt_tokens_min_max']})")
    results.write(summary=summary, raw={})


if __name__ == "__main__":
    main()
