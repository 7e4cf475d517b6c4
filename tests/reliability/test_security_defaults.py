"""Security defaults: listeners bind loopback, API keys never reach what we write.

- `init_ray` starts Ray without a dashboard; the Serve HTTP proxy binds `serving.http_host`
  (127.0.0.1 by default). A socket-level check (psutil) lists every TCP port the Ray session
  listens on: the Serve port is loopback-only, no dashboard listens, and the listeners on all
  interfaces belong only to Ray's own daemons (GCS, raylet/object manager, ...), as the README
  says.
- A key planted in the variable named by `api_key_env` is used (a local OpenAI-compatible
  server sees it) but appears in no file under the run dir: config dump, W&B offline run,
  metrics JSONL, LLM cache, ledger, the RLlib config that checkpoints store, logs.
  The same holds for a `teamsrl generate` run (rows.jsonl, data.jsonl, dataset/, summary, the
  dataset card) whose expert and reviewer are that server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path

import pytest
from http_stub import JSONHandler, serving

from teamsrl.config import dump_config, load_config

KEY_ENV = "TEAMSRL_RELIABILITY_API_KEY"


def test_local_ray_starts_without_dashboard_and_serve_defaults_to_loopback(monkeypatch):
    import ray

    from teamsrl.raycluster import init_ray
    from teamsrl.serving.config import ServeConfig

    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray(None, num_cpus=2)
    assert seen["include_dashboard"] is False and seen["address"] == "local"
    assert ServeConfig().http_host == "127.0.0.1"
    assert "0.0.0.0" in str(load_config(None, ["serving.http_host=0.0.0.0"]).serving.http_host)


def _listeners() -> list[tuple[str, int, int, str, str]]:
    """(address, port, pid, process name, command line) of every listening TCP socket."""
    import psutil

    out = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status != psutil.CONN_LISTEN or c.pid is None:
            continue
        try:
            proc = psutil.Process(c.pid)
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.Error:
            continue
        out.append((c.laddr.ip, c.laddr.port, c.pid, name, cmd))
    return out


def _session_pids() -> set[int]:
    """This test process's Ray session: the processes started under our GCS/raylet."""
    import psutil

    me = psutil.Process()
    pids = {p.pid for p in me.children(recursive=True)}
    return pids


@pytest.mark.integration
def test_serve_http_listens_on_loopback_only_and_no_dashboard(ray_serve):
    _, _, serve_config = ray_serve
    ours = _session_pids()
    mine = [entry for entry in _listeners() if entry[2] in ours]
    _record_listeners(mine)
    assert mine, "no listener found for this Ray session"
    serve_port = [e for e in mine if e[1] == serve_config.http_port]
    assert serve_port and {e[0] for e in serve_port} == {"127.0.0.1"}, serve_port
    assert not [e for e in mine if e[1] == 8265], mine  # no dashboard web UI / REST API
    # Ray 2.60 starts its dashboard head even with include_dashboard=False, headless: only the
    # usage-stats module and no frontend (one gRPC port, listed below); never the web UI
    headed = [e for e in mine if (e[3] == "ray::DashboardHead" or "dashboard.py" in e[4])
              and "--disable-frontend" not in e[4]]
    assert not headed, headed
    # what still binds every interface: Ray's own gRPC servers (GCS, raylet, object manager,
    # each worker's core-worker server, the dashboard agent's gRPC port); see the README
    wildcard = [e for e in mine if e[0] in ("0.0.0.0", "::")]
    assert all(_is_ray_internal(e) for e in wildcard), wildcard


def _is_ray_internal(entry) -> bool:
    name, cmdline = entry[3], entry[4]
    return name in ("gcs_server", "raylet") or name.startswith("ray::") or "/ray/" in cmdline


def _record_listeners(listeners) -> None:
    """Print the listener table (the README's list comes from this output)."""
    for ip, port, pid, name, cmd in sorted(listeners, key=lambda e: (e[3], e[1])):
        print(f"listener {name[:40]:>40} pid {pid:>7} {ip}:{port}  {cmd[:90]}")


# ------------------------------------------------------------------------------ API keys
class _FakeOpenAI(JSONHandler):
    """An OpenAI-compatible server that records the Authorization header of every request.

    `/v1/chat/completions` answers with a text that names the prompt's length (so rewrites
    differ); `/v1/completions` (echo + logprobs, how `OpenAIEngine` scores) echoes the prompt as
    word and space tokens, each -0.5 (too flat for the score probe, which these tests turn off).
    """

    auth_headers: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.body()
        type(self).auth_headers.append(self.headers.get("Authorization", ""))
        if self.path.endswith("/completions") and "messages" not in body:
            tokens = re.findall(r"\s+|\S+", body["prompt"])
            offsets = [sum(map(len, tokens[:i])) for i in range(len(tokens))]
            reply = {"id": "x", "object": "text_completion", "created": 0,
                     "model": body["model"],
                     "choices": [{"index": 0, "text": body["prompt"], "finish_reason": "length",
                                  "logprobs": {"tokens": tokens,
                                               "token_logprobs": [None] + [-0.5] * (
                                                   len(tokens) - 1),
                                               "top_logprobs": None, "text_offset": offsets}}],
                     "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0,
                               "total_tokens": len(tokens)}}
        else:
            n = len(json.dumps(body["messages"]))
            text = "A rewritten instruction." if body["messages"][-1]["content"] == \
                "Rewrite: hi" else f"Plan a route of {n} km by bike and list the stops."
            reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
        self.reply(reply)


@pytest.fixture
def fake_openai():
    _FakeOpenAI.auth_headers = []
    with serving(_FakeOpenAI) as server:
        yield server.url


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*"))
            if p.is_file() and needle in p.read_bytes()]


def test_planted_api_key_is_used_but_written_nowhere(tmp_path, fake_openai, monkeypatch):
    from teamsrl.llm.client import build_client
    from teamsrl.llm.ledger import format_totals
    from teamsrl.policy.train import build_ppo
    from teamsrl.tracking import Tracker

    secret = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, secret)
    run = tmp_path / "run"
    config = load_config(None, [
        f"run_dir={run}", "tracking.mode=offline", "llm.expert.engine=openai",
        f"llm.expert.base_url={fake_openai}", f"llm.expert.api_key_env={KEY_ENV}",
        "llm.expert.served_model=fake", "llm.reviewer.engine=openai",
        f"llm.reviewer.base_url={fake_openai}", f"llm.reviewer.api_key_env={KEY_ENV}",
        "llm.expert.probe_score=false", "llm.reviewer.probe_score=false"])
    run.mkdir()
    log_file = run / "debug.log"  # everything logged, at DEBUG, by us and the HTTP stack
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        (run / "config.yaml").write_text(dump_config(config))
        client = build_client(config.llm, run, stage="security")
        request = client.request("expert", [{"role": "user", "content": "Rewrite: hi"}], seed=3)
        (reply,) = client.chat("expert", [request])
        (run / "ledger.txt").write_text(format_totals(client.ledger.totals()))
        client.close()
        tracker = Tracker(config, "security")
        tracker.log({"queries/expert": 1.0}, step=1)
        tracker.finish()
        # what RLlib stores in every checkpoint: the algorithm config with the env config
        ppo = build_ppo(config, sample_timeout_s=60, seed=1)
        (run / "algorithm-config.json").write_text(json.dumps(ppo.to_dict(), default=repr))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    assert reply.text == "A rewritten instruction."
    assert _FakeOpenAI.auth_headers == [f"Bearer {secret}"]  # the key was really used
    written = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert any(w.startswith("wandb/") for w in written) and "llm-cache.sqlite" in written
    assert _files_holding(run, secret) == [], written
    assert KEY_ENV in (run / "config.yaml").read_text()  # the variable's name, not its value
    assert secret not in os.environ.get("WANDB_CONFIG", "")


@pytest.mark.integration
def test_planted_api_key_reaches_no_generation_artefact(tmp_path, fake_openai, monkeypatch):
    """A tiny `teamsrl generate` run (2 seeds, 1 step, answers on) whose expert and reviewer
    are the key-checking server: every file it writes is grepped for the key."""
    from teamsrl.generation.run import run_generation

    secret = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, secret)
    run = tmp_path / "run"
    remote = [f"base_url={fake_openai}", f"api_key_env={KEY_ENV}", "served_model=fake",
              "tokenizer=embedded:smollm2-135m-instruct", "probe_score=false"]
    config = load_config(None, [
        f"run_dir={run}", "tracking.mode=offline", "env.horizon=1", "generate.max_seeds=2",
        "generate.batch_seeds=2", "llm.expert.engine=openai", "llm.reviewer.engine=openai",
        "env.reward.invalid_fails=false", "env.reward.validity_weight=0",  # the fake's text
        *(f"llm.{role}.{s}" for role in ("expert", "reviewer") for s in remote)])
    summary = run_generation(config, "random", progress=False)
    assert summary["rows_total"] == 2 and summary["queries"]["expert"] >= 2
    assert _FakeOpenAI.auth_headers and set(_FakeOpenAI.auth_headers) == {f"Bearer {secret}"}
    written = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    for name in ("rows.jsonl", "data.jsonl", "README.md", "summary.json"):
        assert f"generate/random/{name}" in written, written
    assert any(w.startswith("generate/random/dataset/") for w in written), written
    assert _files_holding(run, secret) == [], written
