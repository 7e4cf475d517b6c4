"""`teamsrl generate`: the instruction dataset from the trained policy or the random baseline.

    teamsrl generate --config experiments/quickstart.yaml --policy runs/quickstart
    teamsrl generate --config experiments/quickstart.yaml --policy random   # Evol-Instruct

For each seed instruction: H evolution steps (the operation chosen by the policy, a uniformly
random one for `random`, or forced at configured steps: `choose.py`), each rewrite checked by
WizardLM's elimination rules inside the MDP; then the expert answers every kept instruction
(`episodes.py`). Seeds run `generate.batch_seeds` at a time, so each step is one engine batch.
This module is the command: the output folder and its resume manifest, the row log
(`rows.py`), local or sharded batches, then `finalize.py` (dedup, summary) and `card.py`.

Output under `<run_dir>/generate/<policy|random>/` (or `--out`):
    rows.jsonl     every raw row with its verdicts, plus one `seed_done` record per finished seed;
                   appended once per batch, flushed and fsynced: what a restart resumes from
    data.jsonl     the final dataset (Alpaca columns + provenance), after near-duplicate removal
    dataset/       the same as a `datasets.Dataset` (`save_to_disk`)
    summary.json   counts, drop reasons, ledger, diversity and the diversity-vs-queries curve
    README.md      the dataset card: config, counts, ledger, licence of the seeds

Determinism: a seed's episode depends only on (run seed, seed id): sampling seeds derive from
them, engines are batch-invariant, so the rows do not depend on batching, sharding or restarts.
Resume: rerun the same command; finished seeds are skipped, a seed's rows count only with its
`seed_done` record, and the cache returns every query the killed run had already answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

from teamsrl.config import ExperimentConfig, dump_config
from teamsrl.generation.choose import Chooser
from teamsrl.generation.episodes import BatchGenerator, arm_of, stage_of
from teamsrl.generation.finalize import finalize, training_queries
from teamsrl.generation.rows import RowLog
from teamsrl.layout import GenerationLayout, RunLayout

log = logging.getLogger(__name__)

__all__ = ["arm_of", "run_generation", "stage_of"]


def run_generation(config: ExperimentConfig, policy: str = "random",
                   out_dir: str | Path | None = None, seeds: str | Path | None = None,
                   client=None, progress: bool = True, address: str | None = None) -> dict:
    """Generate (or finish generating) a dataset; returns the summary (also `summary.json`)."""
    from teamsrl.seeds import load_seeds

    gen = config.generate
    arm, stage = arm_of(policy), stage_of(policy)
    out = (GenerationLayout(Path(out_dir)) if out_dir is not None
           else RunLayout.of(config.run_dir).generation(arm))
    seed_set = load_seeds(seeds if seeds is not None else config.env.seed_file,
                          config.env.seed_column, config.env.max_seed_chars)
    if seed_set.skipped:
        log.warning("seeds: %s", seed_set.report())
    pool = seed_set.seeds[:gen.max_seeds] if gen.max_seeds else seed_set.seeds
    # fail on a bad policy / forced action before any model loads
    chooser = Chooser(config, config.actions.names(), policy)
    training_queries(policy)  # a policy whose training cost is unknown fails here, not at the end
    _prepare_out(out, config, policy, seed_set.source, len(pool))

    rowlog = RowLog(out.rows)
    todo = [(i, s) for i, s in enumerate(pool) if s.id not in rowlog.done]
    batches = [todo[i:i + gen.batch_seeds] for i in range(0, len(todo), gen.batch_seeds)]
    started = time.perf_counter()
    if batches:
        runner = _run_sharded if gen.shards > 0 else _run_local
        runner(config, policy, batches, rowlog, client, stage, address,
               _progress(len(pool), len(pool) - len(todo), rowlog, progress), chooser)
    summary = finalize(config, out, policy, rowlog.rows, pool, seed_set, client, stage)
    summary["seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    out.summary.write_text(json.dumps(summary, indent=2))
    return summary


def _prepare_out(out: GenerationLayout, config: ExperimentConfig, policy: str, source: str,
                 n: int) -> None:
    try:
        out.root.mkdir(parents=True, exist_ok=True)
        probe = out.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {str(out.root)!r}: cannot write there ({e.strerror})") from None
    manifest = {"policy": policy if policy == "random" else str(Path(policy).resolve()),
                "seeds": source, "seeds_used": n,
                "config": json.loads(json.dumps(config.model_dump(mode="json"))),
                }
    # what must not change between a run and its resume: everything that shapes the rows
    keyed = {k: manifest["config"][k] for k in ("seed", "llm", "actions", "env")}
    keyed["generate"] = {k: v for k, v in manifest["config"]["generate"].items()
                         if k not in ("shards", "batch_seeds", "dedup")}
    manifest["key"] = hashlib.sha256(json.dumps([manifest["policy"], source, n, keyed],
                                                sort_keys=True).encode()).hexdigest()[:16]
    path = out.manifest
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") != manifest["key"]:
            raise ValueError(f"--out {str(out.root)!r} holds a generation run with another policy, "
                             "seed file or config; resume it with the same command or choose "
                             "another --out")
    path.write_text(json.dumps(manifest, indent=2))
    out.config.write_text(dump_config(config))


def _progress(total: int, done: int, rowlog: RowLog, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, unit="seed", desc="generate", disable=not enabled)

    def update(n_seeds: int) -> None:
        kept = sum(r.kept for r in rowlog.rows)
        reasons = Counter(r.drop.kind.value for r in rowlog.rows if not r.kept)
        queries = sum(r.queries["expert"] for r in rowlog.rows)
        bar.set_postfix_str(f"kept {kept}, dropped {dict(reasons)}, expert queries {queries}",
                            refresh=False)
        bar.update(n_seeds)
        if bar.n >= bar.total:
            bar.close()

    return update


def _run_local(config, policy, batches, rowlog, client, stage, address, update, chooser
               ) -> None:
    from teamsrl.llm.client import build_client

    own = client is None
    client = client or build_client(config.llm, config.run_dir, stage=stage)
    previous_stage = client.stage
    client.stage = stage  # an injected client records this arm's calls under its stage
    try:
        generator = BatchGenerator(config, policy, client, stage, chooser)
        for batch in batches:
            rows = generator.run(batch)
            rowlog.append(rows, [s.id for _, s in batch])
            update(len(batch))
    finally:
        client.stage = previous_stage
        if own:
            client.close()


def _run_sharded(config, policy, batches, rowlog, client, stage, address, update, chooser
                 ) -> None:
    """Batches spread over `generate.shards` Ray actors that call the Serve app; the driver is
    the only writer of rows.jsonl (results are appended as they arrive, in any order). Each
    actor holds two batches at a time and gets the next one when one of its own finishes, so a
    slow actor never collects a backlog while a fast one idles. (The actors build their own
    `Chooser` from the config; `chooser` is the driver's, used only by `_run_local`.)"""
    import ray

    from teamsrl.raycluster import init_ray

    init_ray(address)
    _ensure_serve_app(config)
    policy_arg = policy if policy == "random" else str(Path(policy).resolve())
    shard = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(_Shard)
    actors = [shard.remote(config.model_dump(mode="json"), policy_arg, stage)
              for _ in range(config.generate.shards)]
    pending: dict = {}  # object ref -> (actor, batch)
    queue = list(batches)

    def submit(actor) -> None:
        if queue:
            batch = queue.pop(0)
            pending[actor.run.remote(batch)] = (actor, batch)

    try:
        for _ in range(2):
            for actor in actors:
                submit(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, batch = pending.pop(ready[0])
            rowlog.append(ray.get(ready[0]), [s.id for _, s in batch])
            update(len(batch))
            submit(actor)
    finally:
        for actor in actors:
            ray.kill(actor)


def _ensure_serve_app(config: ExperimentConfig) -> None:
    from ray import serve

    from teamsrl.serving.deployment import deploy

    try:
        serve.get_app_handle(config.serving.app_name)
    except Exception:  # not running: deploy it (Serve raises several types here)
        deploy(config.llm, config.serving, config.run_dir, stage="generate")


class _Shard:
    """A Ray actor generating batches through the Serve app (one env set, one embedder)."""

    def __init__(self, config: dict, policy: str, stage: str):
        from teamsrl.config import validate
        from teamsrl.serving.client import ServeLLMClient

        cfg = validate(config, source="<generate shard>")
        client = ServeLLMClient.connect(cfg.serving.app_name, cfg.llm,
                                        transport=cfg.serving.transport,
                                        timeout_s=cfg.serving.request_timeout_s, stage=stage)
        self.generator = BatchGenerator(cfg, policy, client, stage)

    def run(self, batch):
        return self.generator.run(batch)
