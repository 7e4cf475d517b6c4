"""The analysis of `cluster_scaling.py`: per-step time split, the table, the goals, the figure."""

from __future__ import annotations

import argparse
import statistics

from cluster_sizing import REQUESTS_PER_STEP, Costs

PARTS = ("llm_s", "encode_s", "env_s", "rllib_s", "transfer_s", "learner_s")
LABELS = {"llm_s": "LLM wait", "encode_s": "MiniLM encode", "env_s": "env Python",
          "rllib_s": "RLlib (runner)", "transfer_s": "transfer+sync", "learner_s": "PPO learner"}


# request counts and token sums of an iteration's env steps, as the runners' clocks saw them
WORK = ("chat_prompt", "chat_completion", "chats", "score_prompt", "scores")


def alone_seconds(work: dict, constants: dict) -> float:
    """Seconds the simulated engine (unscaled) would take for these requests one at a time,
    each alone on the GPU: a chat `wave_overhead_s + prefill x prompt + (decode_step_s +
    decode_s_per_token) x completion`, a score `wave_overhead_s + prefill x (context +
    candidates)` (`SimulatedEngine.wave_seconds` of one request; linear, so sums suffice). The
    work a point's requests are, whatever the concurrency."""
    c = constants
    return (c["wave_overhead_s"] * (work["chats"] + work["scores"])
            + c["prefill_s_per_token"] * (work["chat_prompt"] + work["score_prompt"])
            + (c["decode_step_s"] + c["decode_s_per_token"]) * work["chat_completion"])


def split_ints(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4] (argparse type)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, "
                                          "e.g. 1,2,4") from None


def step_split(records: list[dict], wall: float, learn: float) -> dict:
    """One iteration's env steps (those its runners' records say ended in its window) and its
    time per env step by component."""
    steps = sum(r["steps"] for r in records)
    per = max(1, steps)
    by_pid: dict[int, list[dict]] = {}
    for r in records:
        by_pid.setdefault(r["pid"], []).append(r)
    spans = {p: max(r["end"] for r in rs) - min(r["start"] for r in rs)
             for p, rs in by_pid.items()}
    in_step = {p: sum(r["end"] - r["start"] for r in rs) for p, rs in by_pid.items()}
    llm, enc = sum(r["llm_s"] for r in records), sum(r["encode_s"] for r in records)
    return {"env_steps": steps, "step_records": len(records), "runner_pids": len(by_pid),
            "llm_s": llm / per, "encode_s": enc / per,
            "env_s": (sum(in_step.values()) - llm - enc) / per,
            "rllib_s": sum(spans[p] - in_step[p] for p in spans) / per,
            "transfer_s": max(0.0, wall - learn - max(spans.values(), default=0.0)) / per,
            "learner_s": learn / per,
            **{k: sum(r[k] for r in records) for k in WORK}}


def point_summary(iterations: list[dict]) -> dict:
    """A point's env steps/s (env steps the runners finished from the end of the warm-up
    iteration to the end of the last, over that time: sampling, learning and the driver's work
    between iterations alike, whatever the sampling mode), iteration time, per-step split and
    request shapes, over the iterations after the warm-up."""
    measured = [i for i in iterations if not i["warmup"]] or iterations
    steps = sum(i["env_steps"] for i in measured)
    keys = ("llm_s", "encode_s", "env_s", "rllib_s", "transfer_s", "learner_s")
    return {"env_steps_per_s": steps / sum(i["window_s"] for i in measured),
            "env_steps": steps,
            "work": {k: sum(i[k] for i in measured) for k in WORK},
            "iteration_s": statistics.median(i["wall_s"] for i in measured),
            "per_env_step": {k: statistics.median(i[k] for i in measured) for k in keys},
            "shapes": {"chat_prompt": sum(i["chat_prompt"] for i in measured)
                       / max(1, sum(i["chats"] for i in measured)),
                       "score_prompt": sum(i["score_prompt"] for i in measured)
                       / max(1, sum(i["scores"] for i in measured))}}


def mode_of(point: dict) -> str:
    """A point's `policy.sampling` mode (points written before the key: sync)."""
    return point.get("sampling", "sync")


def sampling_modes(summary: dict) -> list[str]:
    """The `policy.sampling` modes a results file measured (files before the key: sync)."""
    return summary["sweep"].get("sampling", ["sync"])


def _point(summary: dict, runners: int, envs: int, replicas: int, sampling: str = "sync"
           ) -> dict | None:
    return next((p for p in summary["points"] if (p["runners"], p["envs"], p["replicas"],
                                                  mode_of(p))
                 == (runners, envs, replicas, sampling)), None)


def _work_ratio(summary: dict, one: dict, p: dict) -> float | None:
    """Engine work per env step of point `p` over the 1-runner point's: the seconds their
    requests would take one at a time, alone (`alone_seconds`), per env step. The points draw
    different completions (each its own run seed: a shared cache must not answer one from
    another), so the raw ratio of rates mixes the work with the scaling; times this, it does
    not. None for results written before the work was recorded."""
    if "work" not in one or "work" not in p or not one["work"].get("chat_completion"):
        return None
    c = summary["engine"]["constants"]
    per_step = [alone_seconds(q["work"], c) / max(1, q["env_steps"]) for q in (one, p)]
    return per_step[1] / per_step[0]


def knee(constants: dict) -> float:
    """Requests in flight at the engine's knee: where the rows' share of a decode step
    (decode_s_per_token each) equals its fixed part (decode_step_s), so a step lasts twice as
    long as alone."""
    return constants["decode_step_s"] / constants["decode_s_per_token"]


def _runner_goals(summary: dict, args, cores: int, mode: str) -> list[dict]:
    """Env steps/s from 1 runner to the most below the knee, raw and per unit of engine work."""
    out = []
    e1 = args.envs_per_runner
    one = _point(summary, 1, e1, 1, mode)
    bend = knee(summary["engine"]["constants"])
    below = [p["runners"] for p in summary["points"] if p["envs"] == e1 and p["replicas"] == 1
             and mode_of(p) == mode and 1 < p["runners"] <= 8
             and p["runners"] * e1 < bend]
    tag = f"{mode} sampling: "
    if one and below:
        w = max(below)
        p = _point(summary, w, e1, 1, mode)
        eff = p["env_steps_per_s"] / (w * one["env_steps_per_s"])
        engine = p["model_engine_only"] / (w * one["model_engine_only"])
        work = _work_ratio(summary, one, p)
        if work is not None:  # the same rate per unit of engine work (see _work_ratio)
            eff_work = eff * work
            out.append({"goal": f"{tag}env steps/s >= 0.75 of linear per unit of engine work, 1 -> "
                        f"{w} runners of {e1} env(s) (each point's requests timed alone on the "
                        "simulated engine)", "value": round(eff_work, 3),
                        "met": eff_work >= 0.75,
                        "note": f"raw {eff:.3f} x work per env step {work:.3f} of the 1-runner "
                        "point's (its completions are drawn from its own seeds)"})
        note = (f"the engine model alone allows {engine:.2f} of linear here (continuous "
                f"batching: each sequence decoding lengthens every step, and each admission's "
                f"prefill stalls the others' decoding), so the rest of the system keeps "
                f"{eff / engine:.2f} of what the engine allows")
        if p["model_bound_here"] == "cpu":
            note += (f"; {cores} cores cap it (model: cpu binds), "
                     f"{p['model_unlimited_cores'] / (w * one['env_steps_per_s']):.2f} of "
                     "linear with unlimited cores")
        out.append({"goal": f"{tag}env steps/s >= 0.75 of linear, 1 -> {w} runners of {e1} env(s) "
                    f"(below the knee: {w * e1} in flight < {bend:.0f})",
                    "value": round(eff, 3), "met": eff >= 0.75, "note": note})
    else:
        out.append({"goal": f"{tag}env steps/s >= 0.75 of linear, 1 -> 8 runners", "met": None,
                    "note": "not measured: needs 1 and a larger runner count below the knee"})
    return out


def _saturation_goal(summary: dict, args, mode: str) -> dict:
    """The rollout at saturation on one replica over the engine's own ceiling."""
    ceiling = summary["engine"]["ceiling_env_steps_per_s"]
    cap = summary["engine"]["inflight_cap"]
    sat = _point(summary, *args.saturation, 1, mode)
    if sat and sat["runners"] * sat["envs"] >= cap:
        ratio = sat["env_steps_per_s"] / ceiling
        return {"goal": f"{mode} sampling: at saturation rollout >= 0.8 of the engine's "
                f"ceiling ({sat['runners']} runners x {sat['envs']} envs = "
                f"{sat['runners'] * sat['envs']} in flight for {cap} slots, 1 replica, "
                f"ceiling {ceiling:.1f} env steps/s)",
                "value": round(ratio, 3), "met": ratio >= 0.8,
                "note": f"model bound here: {sat['model_bound_here']}"}
    return {"goal": f"{mode} sampling: at saturation rollout >= 0.8 of the engine's ceiling",
            "met": None, "note": f"not measured: no point with >= {cap} requests in flight "
            "on one replica"}


def goals(summary: dict, args, cores: int) -> list[dict]:
    """The four goals of issue 17, each met / not met / not measured, with its figures (the
    runner and saturation goals once per sampling mode measured)."""
    out = []
    for mode in sampling_modes(summary):
        out += _runner_goals(summary, args, cores, mode) + [_saturation_goal(summary, args,
                                                                             mode)]
    p50 = summary["proxy"]["added_ms_p50"]
    out.append({"goal": "the proxy adds <= 5 ms p50 per request", "value": round(p50, 2),
                "met": p50 <= 5.0, "note": f"p99 {summary['proxy']['added_ms_p99']:.1f} ms, "
                "engine time 0, no batch wait; of which Serve's bare handle round trip "
                f"{summary['proxy']['handle_ms_p50']:.1f} ms, the rest the replica's batch "
                "handler, thread hop and the store's round trips (the commit; a lookup "
                "only when the replica knows some of the batch's keys are cached)"})
    costs = Costs.of(summary)
    ceiling = summary["engine"]["ceiling_env_steps_per_s"]
    ceilings = {
        f"CPU ({cores} cores): {1e3 * costs.cpu_s:.1f} ms CPU per env step": cores / costs.cpu_s,
        f"one LLMServer replica + store: {costs.proxy_rps:.0f} requests/s, "
        f"{1e3 * costs.proxy_s_per_request:.2f} ms each": costs.proxy_rps / REQUESTS_PER_STEP,
        f"the simulated engine (time scale {summary['time_scale']})": ceiling,
    }
    first = min(ceilings, key=ceilings.get)
    ours = min(list(ceilings)[:2], key=ceilings.get)  # the system's own, the engine aside
    share = {LABELS[k]: getattr(costs, k) for k in ("encode_s", "env_s", "rllib_s",
                                                    "transfer_s")}
    share["Serve path"] = REQUESTS_PER_STEP * costs.proxy_s_per_request
    top = max(share, key=share.get)
    out.append({"goal": "first component to saturate on this machine", "value": first,
                "met": True, "note": f"at {ceilings[first]:.1f} env steps/s (one replica); "
                f"of teamsrl's own components: {ours} at {ceilings[ours]:.1f} env steps/s; "
                f"largest CPU share per env step: {top} {1e3 * share[top]:.1f} ms; ceilings "
                + ", ".join(f"{k.split(':')[0]} {v:.1f}" for k, v in ceilings.items())})
    return out


def print_table(summary: dict, args, cores: int) -> None:
    """The scaling table, the per-step split and the goals."""
    print(f"\nSIMULATED engines (latency model of a vLLM A100), time scale {args.time_scale}: "
          "every engine latency is that fraction of the modelled GPU's; env steps/s are of "
          f"this scaled run. Engine slots {args.max_num_seqs}; a replica runs up to "
          f"{args.concurrent_batches} engine calls of up to {args.max_batch} requests at once, "
          f"batch wait {args.batch_wait} s; {cores} cores.")
    print(f"{'sampling':>8} {'runners':>7} {'envs':>4} {'repl':>4} {'inflight':>8} {'steps/s':>8} "
          f"{'lin.eff':>7} "
          f"{'iter s':>7} " + " ".join(f"{LABELS[k][:9]:>9}" for k in PARTS)
          + f" {'model':>7} {'bound':>7} {'model∞':>7}")
    for p in summary["points"]:
        mode = mode_of(p)
        one = _point(summary, 1, args.envs_per_runner, 1, mode)
        eff = (p["env_steps_per_s"] / (p["runners"] * p["envs"] * one["env_steps_per_s"])
               if one and p["replicas"] == 1 else float("nan"))
        inflight = p["runners"] * p["envs"] / p["replicas"]
        print(f"{mode:>8} {p['runners']:>7} {p['envs']:>4} {p['replicas']:>4} {inflight:>8.0f} "
              f"{p['env_steps_per_s']:>8.2f} {eff:>7.2f} {p['iteration_s']:>7.1f} "
              + " ".join(f"{1e3 * p['per_env_step'][k]:>7.1f}ms" for k in PARTS)
              + f" {p['model_here']:>7.1f} {p['model_bound_here']:>7} "
              f"{p['model_unlimited_cores']:>7.1f}")
    print("engine ceiling (alone, kept full): "
          f"{summary['engine']['ceiling_env_steps_per_s']:.1f} env steps/s per replica; "
          f"proxy +{summary['proxy']['added_ms_p50']:.2f} ms p50 / "
          f"+{summary['proxy']['added_ms_p99']:.2f} ms p99, "
          f"{summary['proxy']['rps_ceiling']:.0f} requests/s")
    print(f"model: min(runners, engine, proxy, cpu) of benchmarks/cluster_sizing.py with the "
          f"costs of the first point; 'model' at {cores} cores, 'model∞' with unlimited cores "
          f"(where they differ, the {cores} cores cap the measured figure). steps/s: env steps "
          "the runners finished from the end of the warm-up iteration to the end of the last, "
          "over that time (both sampling modes alike); "
          "per-step times are per env step (LLM wait: a vector step's wait / its envs).")
    for g in summary["goals"]:
        verdict = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[g["met"]]
        if g["goal"].startswith("first component"):
            verdict = "NAMED"
        print(f"  [{verdict}] {g['goal']}: {g.get('value', '')} {g['note']}")


def plot(summary: dict, path: str) -> None:
    """Env steps/s against runners and replicas (measured, linear, model), and the per-step
    split of every point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ceiling = summary["engine"]["ceiling_env_steps_per_s"]
    pts = summary["points"]
    e1, (ws, es) = summary["sweep"]["envs_per_runner"], summary["sweep"]["saturation"]
    panels = ((axes[0], "runners", f"{e1} env(s) each, 1 replica",
               lambda p: p["envs"] == e1 and p["replicas"] == 1),
              (axes[1], "replicas", f"{ws} runners x {es} envs",
               lambda p: (p["runners"], p["envs"]) == (ws, es)))
    for ax, key, label, keep in panels:
        for mode in sampling_modes(summary):
            sel = sorted((p for p in pts if keep(p) and mode_of(p) == mode),
                         key=lambda p: p[key])
            x = [p[key] for p in sel]
            ax.plot(x, [p["env_steps_per_s"] for p in sel], "o-", label=f"measured, {mode}")
            if key == "runners" and sel:
                ax.plot(x, [sel[0]["env_steps_per_s"] * v / x[0] for v in x], ":",
                        label=f"linear from {mode}'s 1 runner")
        sel = sorted((p for p in pts if keep(p) and mode_of(p) == "sync"),
                     key=lambda p: p[key])
        x = [p[key] for p in sel]
        ax.plot(x, [p["model_here"] for p in sel], "s--", label="model, this machine")
        ax.plot(x, [p["model_unlimited_cores"] for p in sel], "^:", label="model, ∞ cores")
        if key == "runners":
            ax.axhline(ceiling, color="grey", lw=0.8, label="engine ceiling (1 replica)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{key} ({label})")
        ax.set_ylabel("env steps/s")
        ax.legend(fontsize=7)
    bottom = [0.0] * len(pts)
    names = [f"{p['runners']}x{p['envs']}/{p['replicas']}R {p.get('sampling', 'sync')[0]}"
             for p in pts]
    for k in PARTS:
        vals = [1e3 * p["per_env_step"][k] for p in pts]
        axes[2].bar(names, vals, bottom=bottom, label=LABELS[k])
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[2].set_ylabel("ms per env step")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"teamsrl cluster scaling, SIMULATED engines at time scale "
                 f"{summary['time_scale']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")
