"""`OpenAIEngine.score` beside `TransformersEngine.score` on the same SmolLM2 weights, over a real
OpenAI-compatible server: llama-cpp-python's, on the embedded GGUF, `--logits_all true`
(issue 17 item 6).

    .venv/bin/python benchmarks/openai_score_parity.py --server-python /tmp/lcp/srv/bin/python
        [--base-url URL] [--tolerance 0.05] [--record-fixture PATH]
        [--out benchmarks/results/openai_score_parity.json]

Starts the server as a subprocess (`--server-python`: an interpreter with `llama_cpp.server`,
kept out of the project venv) or uses `--base-url`. Scores a table of (context, candidates)
pairs with both engines, the HTTP one with its start-up probe OFF (the raw comparison), and
prints each candidate's difference and whether every |diff| <= the tolerance. Then builds the
engine the way a run does (`OpenAIEngine.from_spec`, probe ON) and records whether it refuses
the server and with what message. Two diagnostic columns say where a difference comes from:
`local_no_bos` (plain prompts: the local log-prob without the BOS `TransformersEngine` puts
before a plain prompt) and `echo_tail` (where `OpenAIEngine` refused the echo: the server's own
echoed log-probs of the candidate's tokens, read without its checks). `--record-fixture` saves
the server's raw replies to the probe's and a few scoring requests for
tests/unit/test_openai_score.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from results_file import ResultsFile, add_out_argument

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from teamsrl.llm.embedded import SMOLLM2_ID, smollm2_gguf  # noqa: E402
from teamsrl.llm.schema import ScoreRequest  # noqa: E402
from teamsrl.quality import reviewer_request  # noqa: E402
from teamsrl.rewards import verdict_request  # noqa: E402

SERVED_MODEL = "smollm2"  # llama-cpp-python's server answers any model name with its one model


def parity_table() -> list[tuple[str, ScoreRequest]]:
    """(label, request): plain prompts, the reviewer's real verdict and validity prompts, and
    other chat contexts; single- and multi-token candidates."""
    def chat(*turns: tuple[str, str]) -> tuple[dict[str, str], ...]:
        return tuple({"role": r, "content": c} for r, c in turns)

    plain = [("Monday, Tuesday, Wednesday, Thursday,", (" Friday", " Banana")),
             ("A, B,", (" C", " Q")),
             ("The capital of France is", (" Paris", " London", " a city")),
             ("1, 2, 3, 4,", (" 5", " 6")),
             ("The opposite of hot is", (" cold", " warm")),
             ("Once upon a", (" time", " banana split"))]
    table = [(f"plain {p!r}", ScoreRequest(prompt=p, candidates=c)) for p, c in plain]
    table += [
        ("verdict same", verdict_request("Name three fruits.", "Name three fruits.")),
        ("verdict deeper", verdict_request(
            "Name three fruits.", "Name three tropical fruits and explain where each grows.")),
        ("verdict reworded", verdict_request(
            "Write a poem about the sea.",
            "Write a haiku about the sea at night, in the voice of an old sailor.")),
        ("validity task", reviewer_request("Explain how a bicycle gear works.")),
        ("validity noise", reviewer_request("asdf qwer zxcv")),
        ("chat day", ScoreRequest(messages=chat(("user", "What day comes after Thursday?")),
                                  candidates=("Friday", "Banana"))),
        ("chat system yes/no", ScoreRequest(
            messages=chat(("system", "You are a terse assistant."),
                          ("user", "Is the sky blue? Answer Yes or No.")),
            candidates=("Yes", "No"))),
        ("chat two turns", ScoreRequest(
            messages=chat(("user", "What is 2 + 2?"), ("assistant", "4"),
                          ("user", "And 3 + 3?")), candidates=("6", "Six", "7"))),
    ]
    return table


@contextmanager
def llamacpp_server(python: str, gguf: Path, threads: int = 1,
                    start_timeout_s: float = 180.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on `gguf` (`--logits_all true`) on a free port; yield
    its /v1 base URL; stop it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w+", prefix="llamacpp-server-", suffix=".log",
                                      delete=False)
    proc = subprocess.Popen(
        [python, "-m", "llama_cpp.server", "--model", str(gguf), "--logits_all", "true",
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads)],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{python} -m llama_cpp.server exited with {proc.returncode}"
                                   f": {Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server not up on {url} after "
                                       f"{start_timeout_s:.0f} s (log {log.name})") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


def post_completion(base_url: str, body: dict) -> dict:
    """One raw /v1/completions call (no client-side checks)."""
    req = urllib.request.Request(f"{base_url}/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())


def echo_body(prompt: str) -> dict:
    """The body `OpenAIEngine._score` sends for one candidate."""
    return {"model": SERVED_MODEL, "prompt": prompt, "echo": True, "logprobs": 0,
            "max_tokens": 1, "temperature": 0.0}


def echo_tail(base_url: str, prompt: str, candidate: str) -> float | None:
    """The server's echoed log-probs summed over the trailing tokens that spell `candidate`
    (the last echoed token may be the generated one); None when no such run of tokens."""
    lp = post_completion(base_url, echo_body(prompt + candidate))["choices"][0]["logprobs"]
    tokens, values = lp["tokens"], lp["token_logprobs"]
    for end in (len(tokens), len(tokens) - 1):
        for start in range(end - 1, -1, -1):
            text = "".join(tokens[start:end])
            if text == candidate and all(v is not None for v in values[start:end]):
                return float(sum(values[start:end]))
            if len(text) >= len(candidate):
                break
    return None


def local_no_bos(local, prompt: str, candidate: str) -> float:
    """`candidate`'s log-prob after a plain `prompt` without the BOS `TransformersEngine` adds."""
    import torch

    tok = local.tokenizer
    ctx = tok(prompt, add_special_tokens=False)["input_ids"]
    cand = tok(candidate, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cand], device=local.device)
    with torch.inference_mode():
        logp = torch.log_softmax(local.model(input_ids=ids).logits.float()[0, :-1], dim=-1)
    return float(logp.gather(-1, ids[0, 1:, None])[-len(cand):].sum())


def compare(http, local, base_url: str, tolerance: float) -> list[dict]:
    """One row per candidate: local and HTTP log-probs, their difference, the diagnostics."""
    rows = []
    for label, request in parity_table():
        (ref,) = local.score([request])
        try:
            (got,) = http.score([request])
            error = None
        except Exception as e:  # a refusal of one request is a row, not the end of the table
            got, error = None, f"{type(e).__name__}: {e}"
        context = request.prompt if request.prompt is not None else http._chat_prefix(
            request.messages)
        for i, cand in enumerate(request.candidates):
            row = {"pair": label, "candidate": cand, "local": round(ref.logprobs[i], 4),
                   "local_tokens": ref.num_tokens[i],
                   "http": None if got is None else round(got.logprobs[i], 4),
                   "http_tokens": None if got is None else got.num_tokens[i],
                   "diff": None if got is None else round(got.logprobs[i] - ref.logprobs[i], 4),
                   "error": error,
                   # the raw echo only where OpenAIEngine refused it (else it is `http`)
                   "echo_tail": echo_tail(base_url, context, cand) if error else None,
                   "local_no_bos": (round(local_no_bos(local, request.prompt, cand), 4)
                                    if request.prompt is not None else None)}
            if row["echo_tail"] is not None:
                row["echo_tail"] = round(row["echo_tail"], 4)
            row["within"] = row["diff"] is not None and abs(row["diff"]) <= tolerance
            rows.append(row)
    return rows


def try_probe(base_url: str) -> str | None:
    """Build the engine as a run does (probe ON); the refusal's message, or None if accepted."""
    from teamsrl.llm.config import ModelSpec
    from teamsrl.llm.openai_engine import OpenAIEngine, ServerScoreError

    spec = ModelSpec(model=SMOLLM2_ID, engine="openai", base_url=base_url,
                     served_model=SERVED_MODEL)
    try:
        OpenAIEngine.from_spec(spec)
    except ServerScoreError as e:
        return str(e)
    return None


def record_fixture(base_url: str, http, local, path: Path) -> None:
    """Save the server's raw replies to the probe's requests and a few scoring requests, and
    the vLLM-shaped echo (built locally) of the chat probe, for the unit tests."""
    from teamsrl.llm.openai_engine import (
        PROBE_CONTEXT,
        PROBE_LIKELY,
        PROBE_MESSAGES,
        PROBE_REPLY,
        PROBE_UNLIKELY,
    )

    fixtures = json.loads((Path(__file__).parents[1] / "tests" / "fixtures" /
                           "openai_echo_smollm2.json").read_text(encoding="utf-8"))
    chat_probe = http._chat_prefix(PROBE_MESSAGES) + PROBE_REPLY
    verdict = http._chat_prefix(fixtures["verdict_messages"])
    prompts = [PROBE_CONTEXT + PROBE_LIKELY, PROBE_CONTEXT + PROBE_UNLIKELY, chat_probe,
               verdict + "Equal", verdict + "Not Equal", "A, B, C", "A, B, Q"]
    generate = {"model": SERVED_MODEL, "prompt": PROBE_CONTEXT, "max_tokens": 1,
                "temperature": 0.0, "logprobs": 1}
    replies = [{"request": generate, "response": post_completion(base_url, generate)}]
    replies += [{"request": echo_body(p), "response": post_completion(base_url, echo_body(p))}
                for p in prompts]
    record = {
        "source": "llama-cpp-python 0.3.36 server (--logits_all true) on the embedded "
                  "SmolLM2-135M-Instruct Q4_1 GGUF; recorded by benchmarks/openai_score_parity"
                  ".py --record-fixture",
        "llamacpp_replies": replies,
        "vllm_shape_echo": {chat_probe: vllm_shape_echo(local, chat_probe)},
    }
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"fixture: {path}")


def vllm_shape_echo(local, prompt: str) -> dict:
    """The echo of `prompt` as vLLM builds it (no BOS; each token decoded alone, its log-prob
    under the tokens before it; the greedy next token), from the local model."""
    import torch

    tok = local.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(local.model(input_ids=torch.tensor([ids])).logits.float()[0],
                                 dim=-1)
    per_token = logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    nxt = int(logp[-1].argmax())
    return {"tokens": [tok.decode([i]) for i in ids],
            "logprobs": [None] + [round(v, 5) for v in per_token],
            "next": [tok.decode([nxt]), round(float(logp[-1, nxt]), 5)]}


def main() -> None:
    """Start the server (or use --base-url), print the table and the probe's verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-python", default=os.environ.get("TEAMSRL_LLAMACPP_PYTHON"),
                        help="a python with llama_cpp.server (default $TEAMSRL_LLAMACPP_PYTHON)")
    parser.add_argument("--base-url", default=None, help="use this running server instead")
    parser.add_argument("--tolerance", type=float, default=0.05, help="nats per candidate")
    parser.add_argument("--threads", type=int, default=1, help="the server's --n_threads")
    parser.add_argument("--record-fixture", default=None, metavar="PATH",
                        help="save the server's raw replies for the unit tests here")
    add_out_argument(parser, "openai_score_parity")
    args = parser.parse_args()
    if not args.base_url and not args.server_python:
        parser.error("expected --base-url or --server-python (or TEAMSRL_LLAMACPP_PYTHON)")
    results = ResultsFile(args.out, vars(args))

    from teamsrl.llm.openai_engine import OpenAIEngine
    from teamsrl.llm.transformers_engine import TransformersEngine

    local = TransformersEngine(SMOLLM2_ID, device="cpu")
    with (llamacpp_server(args.server_python, smollm2_gguf(), args.threads)
          if not args.base_url else _given(args.base_url)) as url:
        http = OpenAIEngine(url, SMOLLM2_ID, served_model=SERVED_MODEL)
        rows = compare(http, local, url, args.tolerance)
        refusal = try_probe(url)
        if args.record_fixture:
            record_fixture(url, http, local, Path(args.record_fixture))

    print(f"{'pair':<46} {'candidate':<14} {'local':>8} {'http':>8} {'diff':>8} "
          f"{'echo_tail':>9} {'no_bos':>8}")
    for r in rows:
        http_s = "error" if r["http"] is None else f"{r['http']:8.3f}"
        diff_s = "" if r["diff"] is None else f"{r['diff']:+8.3f}"
        tail_s = "" if r["echo_tail"] is None else f"{r['echo_tail']:9.3f}"
        nob_s = "" if r["local_no_bos"] is None else f"{r['local_no_bos']:8.3f}"
        print(f"{r['pair'][:46]:<46} {r['candidate']!r:<14} {r['local']:8.3f} {http_s:>8} "
              f"{diff_s:>8} {tail_s:>9} {nob_s:>8}")
    errors = sorted({r["error"] for r in rows if r["error"]})
    for e in errors:
        print(f"error: {e}")
    diffs = [abs(r["diff"]) for r in rows if r["diff"] is not None]
    summary = {
        "pairs": len(parity_table()), "candidates": len(rows),
        "scored_over_http": len(diffs),
        "max_abs_diff": round(max(diffs), 4) if diffs else None,
        "all_within_tolerance": all(r["within"] for r in rows),
        "tolerance": args.tolerance,
        "errors": errors,
        "probe_refused": refusal is not None,
        "probe_message": refusal,
        "must_show_met": all(r["within"] for r in rows) or refusal is not None,
    }
    print(f"{summary['candidates']} candidates in {summary['pairs']} pairs; scored over HTTP: "
          f"{summary['scored_over_http']}; max |diff| {summary['max_abs_diff']}; all within "
          f"{args.tolerance}: {summary['all_within_tolerance']}")
    print(f"from_spec with the probe on: "
          f"{'REFUSED: ' + refusal if refusal else 'accepted the server'}")
    results.write(summary=summary, raw={"rows": rows})


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
