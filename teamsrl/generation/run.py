"""`teamsrl generate`: the instruction dataset from the trained policy or the random baseline.

    teamsrl generate --config experiments/quickstart.yaml --policy runs/quickstart
    teamsrl generate --config experiments/quickstart.yaml --policy random   # Evol-Instruct

For each seed instruction: H evolution steps (the operation chosen by the policy, a uniformly
random one for `random`, or forced at configured steps), each rewrite checked by WizardLM's
elimination rules inside the MDP; then the expert answers every kept instruction. Seeds run
`generate.batch_seeds` at a time, so each step is one engine batch.

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
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from teamsrl.config import ExperimentConfig, dump_config
from teamsrl.generation.filters import (
    answer_failure,
    deduplicate,
    diversity,
    row_order,
    row_text,
)
from teamsrl.seeds import Seed

log = logging.getLogger(__name__)

ROWS, DATA, SUMMARY, CARD, MANIFEST = "rows.jsonl", "data.jsonl", "summary.json", "README.md", \
    "run.json"
CURVE_POINTS = 20


def arm_of(policy: str) -> str:
    """`random` for the Evol-Instruct baseline, `policy` for a trained policy."""
    return "random" if policy == "random" else "policy"


def stage_of(policy: str) -> str:
    """The ledger stage of a generation arm."""
    return f"generate-{arm_of(policy)}"


def _derive(*parts) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF


# ---------------------------------------------------------------------------- choosing actions
class Chooser:
    """Picks each step's operation: forced ones first, else the policy (or uniform random)."""

    def __init__(self, config: ExperimentConfig, names: Sequence[str], policy: str):
        self.names = list(names)
        self.seed = config.seed
        self.greedy = config.generate.sampling == "greedy"
        self.forced = {}
        for step, name in config.generate.forced_actions.items():
            if name not in self.names:
                raise ValueError(f"generate.forced_actions[{step}] = {name!r}: expected one of "
                                 f"{self.names}")
            self.forced[int(step)] = self.names.index(name)
        self.policy = None
        self.policy_id = "random"
        if policy != "random":
            from teamsrl.policy.export import load_policy

            self.policy = load_policy(policy)
            if self.policy.action_names != self.names:
                raise ValueError(f"--policy {policy!r}: trained for actions "
                                 f"{self.policy.action_names}, but the config's action set is "
                                 f"{self.names}")
            spec = self.policy.spec
            self.policy_id = f"{Path(policy).resolve()}@iteration-{spec.get('iteration')}"

    def choose(self, seed_ids: Sequence[str], step: int, obs: np.ndarray) -> list[int]:
        """Actions for one step (1-based) of the given seeds' episodes."""
        out = []
        probs = None
        if self.policy is not None and step not in self.forced:
            probs = self.policy.action_probabilities(np.asarray(obs))
        for i, sid in enumerate(seed_ids):
            rng = np.random.default_rng(_derive(self.seed, sid, step, "action"))
            if step in self.forced:
                out.append(self.forced[step])
            elif probs is None:
                out.append(int(rng.integers(len(self.names))))
            elif self.greedy:
                out.append(int(np.argmax(probs[i])))
            else:
                p = probs[i] / probs[i].sum()
                out.append(int(rng.choice(len(p), p=p)))
        return out


# ---------------------------------------------------------------------------- one batch
class BatchGenerator:
    """Runs a batch of seeds through the MDP and the answer step; returns their rows."""

    def __init__(self, config: ExperimentConfig, policy: str, client, stage: str,
                 chooser: Chooser | None = None):
        from envs.instruction_mdp import InstructionMDPEnv
        from teamsrl.embeddings import shared_embedder
        from teamsrl.seeds import SeedSet

        self.config = config
        self.client = client
        self.stage = stage
        self.arm = arm_of(policy)
        self.embedder = shared_embedder(config.env.embedder)
        placeholder = SeedSet([Seed("placeholder", "placeholder")], source="<generate>")
        self.envs = [InstructionMDPEnv(config, client=client, embedder=self.embedder,
                                       seeds=placeholder, default_seed=config.seed)
                     for _ in range(config.generate.batch_seeds)]
        self.names = self.envs[0].actions.names
        self.chooser = chooser or Chooser(config, self.names, policy)

    def run(self, batch: Sequence[tuple[int, Seed]]) -> list[dict]:
        """Rows of every step of every seed in `batch` (index in the seed source, seed)."""
        from envs.instruction_mdp import step_many

        if len(batch) > len(self.envs):
            raise ValueError(f"batch of {len(batch)} seeds: expected <= "
                             f"generate.batch_seeds = {len(self.envs)}")
        cfg = self.config
        envs = self.envs[:len(batch)]
        obs, paths, rows = {}, {}, []
        for env, (_, seed) in zip(envs, batch, strict=True):
            o, _ = env.reset(seed=_derive(cfg.seed, seed.id, "episode"),
                             options={"instruction": seed.text})
            obs[seed.id], paths[seed.id] = o, []
        active = list(range(len(batch)))
        for step in range(1, cfg.env.horizon + 1):
            if not active:
                break
            ids = [batch[i][1].id for i in active]
            actions = self.chooser.choose(ids, step, np.stack([obs[s] for s in ids]))
            results = step_many([envs[i] for i in active], actions)
            still = []
            for i, a, (o, _, term, trunc, info) in zip(active, actions, results, strict=True):
                index, seed = batch[i]
                obs[seed.id] = o
                name = self.names[a]
                paths[seed.id].append(name)
                if info["queries"]["expert"]:  # `stop` ends the episode without a row
                    rows.append(self._row(index, seed, step, list(paths[seed.id]), info))
                if not (term or trunc):
                    still.append(i)
            active = still
        self._select_and_answer(rows)
        return rows

    def _row(self, index: int, seed: Seed, step: int, path: list[str], info: dict) -> dict:
        spec = self.client.spec("expert")
        failed = info["failure"]
        return {
            "kind": "row", "row_id": f"{seed.id}/{step}", "seed_id": seed.id,
            "seed_index": index, "step": step, "seed_instruction": seed.text,
            "instruction": info["rewrite"] if failed else info["instruction"],
            "input": "", "output": "",
            "action": path[-1], "action_path": path, "arm": self.arm,
            "policy_id": self.chooser.policy_id,
            "expert_model": spec.model, "reviewer_model": self.client.spec("reviewer").model,
            "sampling": {"temperature": spec.temperature, "top_p": spec.top_p,
                         "max_tokens": spec.max_tokens,
                         "answer_max_tokens": self.config.generate.answer_max_tokens,
                         "policy": self.config.generate.sampling},
            "verdict": info["verdict"], "novelty": info["novelty"],
            "reward_components": info["reward_components"],
            "queries": dict(info["queries"]),
            "failure": failed, "prompt_truncated": info["prompt_truncated"],
            "rewrite_truncated": info["rewrite_truncated"], "output_truncated": False,
            "kept": not failed, "drop_reason": f"failed evolution: {failed}" if failed else "",
        }

    def _select_and_answer(self, rows: list[dict]) -> None:
        gen = self.config.generate
        if gen.keep == "final":
            last: dict[str, dict] = {}
            for r in rows:
                if r["kept"]:
                    last[r["seed_id"]] = r
            for r in rows:
                if r["kept"] and last[r["seed_id"]] is not r:
                    r["kept"], r["drop_reason"] = False, "superseded (generate.keep = final)"
        todo = [r for r in rows if r["kept"]]
        if not gen.answer or not todo:
            return
        requests = [self.client.request(
            "expert", [{"role": "user", "content": r["instruction"]}],
            seed=_derive(self.config.seed, r["seed_id"], r["step"], "answer"),
            max_tokens=gen.answer_max_tokens) for r in todo]
        for r, response in zip(todo, self.client.chat("expert", requests, stage=self.stage),
                               strict=True):
            r["output"] = response.text.strip()
            r["output_truncated"] = response.finish_reason == "length"
            r["queries"]["expert"] += 1
            why = answer_failure(r["output"],
                                 self.config.env.reward.apology_max_words)
            if why:
                r["kept"], r["drop_reason"] = False, why


# ---------------------------------------------------------------------------- rows.jsonl
class RowLog:
    """`rows.jsonl`: appended per batch (flush + fsync); a seed counts once `seed_done`."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self.done: set[str] = set()
        if path.is_file():
            self._recover()

    def _recover(self) -> None:
        raw = self.path.read_bytes()
        cut = raw.rfind(b"\n") + 1  # a torn last line (killed mid-write) is dropped
        records = []
        for n, line in enumerate(raw[:cut].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: line {n} is not JSON ({e.msg}); the file was "
                                 "edited or damaged — move it aside to start over") from None
        self.done = {r["seed_id"] for r in records if r.get("kind") == "seed_done"}
        self.rows = [r for r in records if r.get("kind") == "row" and r["seed_id"] in self.done]
        unfinished = len(records) - len(self.rows) - len(self.done)
        if cut != len(raw) or unfinished:
            log.warning("%s: dropping %d records of unfinished seeds and %d torn bytes",
                        self.path, unfinished, len(raw) - cut)
            self._rewrite([r for r in records if r.get("kind") == "seed_done"
                           or r["seed_id"] in self.done])

    def _rewrite(self, records: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, rows: list[dict], seed_ids: Sequence[str]) -> None:
        """Write a finished batch: its rows, then a `seed_done` record per seed."""
        done = [{"kind": "seed_done", "seed_id": s} for s in seed_ids]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*rows, *done])
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        self.done.update(seed_ids)


# ---------------------------------------------------------------------------- the command
def run_generation(config: ExperimentConfig, policy: str = "random",
                   out_dir: str | Path | None = None, seeds: str | Path | None = None,
                   client=None, progress: bool = True, address: str | None = None) -> dict:
    """Generate (or finish generating) a dataset; returns the summary (also `summary.json`)."""
    from teamsrl.actions import ActionSet
    from teamsrl.seeds import load_seeds

    gen = config.generate
    arm, stage = arm_of(policy), stage_of(policy)
    out = Path(out_dir) if out_dir is not None else Path(config.run_dir) / "generate" / arm
    seed_set = load_seeds(seeds if seeds is not None else config.env.seed_file,
                          config.env.seed_column, config.env.max_seed_chars)
    if seed_set.skipped:
        log.warning("seeds: %s", seed_set.report())
    pool = seed_set.seeds[:gen.max_seeds] if gen.max_seeds else seed_set.seeds
    # fail on a bad policy / forced action before any model loads
    chooser = Chooser(config, ActionSet.from_config(config.actions).names, policy)
    _prepare_out(out, config, policy, seed_set.source, len(pool))

    rowlog = RowLog(out / ROWS)
    todo = [(i, s) for i, s in enumerate(pool) if s.id not in rowlog.done]
    batches = [todo[i:i + gen.batch_seeds] for i in range(0, len(todo), gen.batch_seeds)]
    started = time.perf_counter()
    if batches:
        runner = _run_sharded if gen.shards > 0 else _run_local
        runner(config, policy, batches, rowlog, client, stage, address,
               _progress(len(pool), len(pool) - len(todo), rowlog, progress), chooser)
    summary = finalize(config, out, policy, rowlog.rows, pool, seed_set, client, stage)
    summary["seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def _prepare_out(out: Path, config: ExperimentConfig, policy: str, source: str, n: int) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {str(out)!r}: cannot write there ({e.strerror})") from None
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
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") != manifest["key"]:
            raise ValueError(f"--out {str(out)!r} holds a generation run with another policy, "
                             "seed file or config; resume it with the same command or choose "
                             "another --out")
    path.write_text(json.dumps(manifest, indent=2))
    (out / "config.yaml").write_text(dump_config(config))


def _progress(total: int, done: int, rowlog: RowLog, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, unit="seed", desc="generate", disable=not enabled)

    def update(n_seeds: int) -> None:
        kept = sum(r["kept"] for r in rowlog.rows)
        reasons = Counter(r["drop_reason"].split(":")[0] for r in rowlog.rows if not r["kept"])
        queries = sum(r["queries"]["expert"] for r in rowlog.rows)
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
    previous_stage = client.ledger.stage
    client.ledger.stage = stage  # an injected client records this arm's calls under its stage
    try:
        generator = BatchGenerator(config, policy, client, stage, chooser)
        for batch in batches:
            rows = generator.run(batch)
            rowlog.append(rows, [s.id for _, s in batch])
            update(len(batch))
    finally:
        client.ledger.stage = previous_stage
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
                                        timeout_s=cfg.serving.request_timeout_s, stage=stage)
        self.generator = BatchGenerator(cfg, policy, client, stage)

    def run(self, batch):
        return self.generator.run(batch)


# ---------------------------------------------------------------------------- the end
def finalize(config: ExperimentConfig, out: Path, policy: str, rows: list[dict],
             pool: Sequence[Seed], seed_set, client, stage: str) -> dict:
    """Deduplicate, write data.jsonl + dataset/ + the card; return the summary."""
    from teamsrl.embeddings import shared_embedder

    embedder = shared_embedder(config.env.embedder)
    d = config.generate.dedup
    candidates = [r for r in rows if r["kept"]]
    kept, dups = deduplicate(candidates, d.minhash_threshold, d.num_perm, d.embedding_threshold,
                             embedder.encode)
    dup_reason = {r["row_id"]: why for r, why in dups}
    drops = Counter(r["drop_reason"].split(":")[0] for r in rows if not r["kept"])
    drops.update(why.split(" of ")[0] for why in dup_reason.values())
    _write_data(out, kept)
    result = {
        "arm": arm_of(policy), "policy": policy, "stage": stage, "out": str(out),
        "seeds": len(pool),
        "seed_source": seed_set.source, "seeds_skipped": seed_set.skipped[:100],
        "rows_total": len(rows), "rows_kept": len(kept),
        "drops": dict(sorted(drops.items())),
        "queries": {"expert": sum(r["queries"]["expert"] for r in rows),
                    "reviewer": sum(r["queries"]["reviewer"] for r in rows)},
        "diversity": diversity([row_text(r) for r in kept], embedder.encode),
        "curve": _curve(rows, set(r["row_id"] for r in kept), embedder.encode),
        "ledger": _ledger(config, client, stage),
        "policy_training": _training_queries(policy),
    }
    _write_card(out, config, result)
    return result


def _write_data(out: Path, kept: list[dict]) -> None:
    from datasets import Dataset

    records = [{k: v for k, v in r.items() if k not in ("kind", "kept", "drop_reason")}
               for r in kept]
    tmp = out / (DATA + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, out / DATA)
    if records:
        ds = Dataset.from_list([{**r, "reward_components": json.dumps(r["reward_components"]),
                                 "sampling": json.dumps(r["sampling"]),
                                 "queries": json.dumps(r["queries"])} for r in records])
        staging = out / "dataset.tmp"
        ds.save_to_disk(str(staging))
        import shutil

        shutil.rmtree(out / "dataset", ignore_errors=True)
        os.replace(staging, out / "dataset")


def _curve(rows: list[dict], kept_ids: set[str], encode: Callable) -> list[dict]:
    """Diversity of the final dataset's rows generated so far vs expert queries spent so far,
    in seed order (the order a run spends queries in)."""
    by_seed: dict[int, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(int(r["seed_index"]), []).append(r)
    order = sorted(by_seed)
    if not order:
        return []
    marks = {order[max(0, -(-k * len(order) // CURVE_POINTS) - 1)]
             for k in range(1, CURVE_POINTS + 1)}
    points, queries, texts, reviewer = [], 0, [], 0
    for idx in order:
        for r in sorted(by_seed[idx], key=row_order):
            queries += r["queries"]["expert"]
            reviewer += r["queries"]["reviewer"]
            if r["row_id"] in kept_ids:
                texts.append(row_text(r))
        if idx in marks:
            div = diversity(texts, encode)
            points.append({"expert_queries": queries, "reviewer_queries": reviewer,
                           "rows_kept": len(texts), "diversity": div["mean_pairwise_distance"],
                           "distinct_2": div["distinct_2"]})
    return points


def _ledger(config: ExperimentConfig, client, stage: str) -> dict:
    """This arm's ledger totals per role (engine queries, cache hits, tokens)."""
    if client is not None:
        totals = client.ledger.totals(stage=stage)
    else:
        from teamsrl.llm.ledger import QueryLedger

        path = config.llm.ledger_path or Path(config.run_dir) / "ledger.sqlite"
        if not Path(path).is_file():
            return {}
        ledger = QueryLedger(path)
        try:
            totals = ledger.totals(stage=stage)
        finally:
            ledger.close()
    return {role: t.as_dict() for role, t in totals.items()}


def _training_queries(policy: str) -> dict:
    """The policy's training cost from `<run_dir>/policy/ledger.json` (random: none)."""
    if policy == "random":
        return {}
    for candidate in (Path(policy), Path(policy).parent, Path(policy).parent.parent):
        f = candidate / "policy" / "ledger.json" if candidate.name != "policy" \
            else candidate / "ledger.json"
        if f.is_file():
            return json.loads(f.read_text())
    return {}


def _write_card(out: Path, config: ExperimentConfig, s: dict) -> None:
    drops = "\n".join(f"| {k} | {v} |" for k, v in s["drops"].items()) or "| none | 0 |"
    ledger = "\n".join(f"| {role} | {t['queries']} | {t['cache_hits']} | {t['prompt_tokens']} | "
                       f"{t['completion_tokens']} |" for role, t in s["ledger"].items())
    training = ", ".join(f"{r}: {t.get('queries', 0)} queries"
                         for r, t in s["policy_training"].items()) or "none (random policy)"
    card = f"""# teamsrl dataset: {config.name} ({s['arm']})

Instruction-following data in the Alpaca format (`instruction`, `input`, `output`) generated by
[teamsrl](https://github.com/) (TeaMs-RL on Ray): seed instructions evolved by
{'a uniformly random operation per step (WizardLM Evol-Instruct baseline)' if s['arm'] == 'random'
 else 'a PPO-trained rewriting policy'}, rewritten and answered by `{config.llm.expert.model}`,
judged by `{config.llm.reviewer.model}`. Every row carries its provenance: seed id, action path,
step, policy id, model ids, sampling parameters, reward components.

- seeds: {s['seeds']} from `{s['seed_source']}` (the bundled Self-Instruct seed tasks are
  Apache-2.0; see teamsrl/data/README.md)
- rows generated: {s['rows_total']}; kept: {s['rows_kept']}
- diversity: mean pairwise embedding distance {s['diversity']['mean_pairwise_distance']:.4f},
  distinct-2 {s['diversity']['distinct_2']:.4f}
- expert requests: {s['queries']['expert']}, reviewer requests: {s['queries']['reviewer']}
- policy training: {training}

## Dropped rows

| reason | rows |
| --- | --- |
{drops}

## Query ledger (this generation; engine queries exclude cache hits)

| role | queries | cache hits | prompt tokens | completion tokens |
| --- | --- | --- | --- | --- |
{ledger}

## Config

```yaml
{dump_config(config)}```
"""
    (out / CARD).write_text(card, encoding="utf-8")
