"""`OpenAIEngine.score` over HTTP: candidate tokens aligned by `text_offset` in both echo shapes
(vLLM appends the generated token, llama-cpp-python's server does not), the prompt-reconstruction
check, and the start-up probe that refuses implausible servers.

The responses are served by a stub on 127.0.0.1 from tests/fixtures/openai_echo_smollm2.json:
SmolLM2-135M's echo of each prompt as vLLM builds it (each token decoded alone, its log-prob
under the tokens before it, then the greedy next token), recorded with transformers on CPU,
with `TransformersEngine.score` of the reviewer's verdict request beside it. The real replies of
llama-cpp-python 0.3.36's server (tests/fixtures/openai_echo_llamacpp_smollm2.json, recorded by
benchmarks/openai_score_parity.py --record-fixture, with the vLLM-shaped echo of the probe's chat
context) replay that server to the probe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from http_stub import JSONHandler, serving

from teamsrl.llm.config import ModelSpec
from teamsrl.llm.openai_engine import (
    PROBE_CONTEXT,
    PROBE_LIKELY,
    OpenAIEngine,
    ServerScoreError,
    candidate_logprobs,
)
from teamsrl.llm.schema import ScoreRequest

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECORDED = json.loads((FIXTURES / "openai_echo_smollm2.json").read_text(encoding="utf-8"))
LLAMACPP = json.loads((FIXTURES / "openai_echo_llamacpp_smollm2.json").read_text(encoding="utf-8"))
ECHO = RECORDED["echo"] | LLAMACPP["vllm_shape_echo"]
MODEL = "embedded:smollm2-135m-instruct"  # the local tokenizer renders the chat prefix


def _reply(tokens: list[str], logprobs: list, prompt: str) -> dict:
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "smollm2",
            "choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "length",
                         "logprobs": {"tokens": tokens, "token_logprobs": logprobs,
                                      "text_offset": offsets, "top_logprobs": None}}],
            "usage": {"prompt_tokens": len(ECHO[prompt]["tokens"]), "completion_tokens": 1,
                      "total_tokens": len(ECHO[prompt]["tokens"]) + 1}}


def vllm_shape(prompt: str) -> dict:
    """The echo, then the one generated token (max_tokens=1)."""
    rec = ECHO[prompt]
    return _reply(rec["tokens"] + [rec["next"][0]], rec["logprobs"] + [rec["next"][1]], prompt)


def llama_cpp_shape(prompt: str) -> dict:
    """The echo alone: no generated token among the log-probs."""
    rec = ECHO[prompt]
    return _reply(rec["tokens"], rec["logprobs"], prompt)


def shifted_logprobs(prompt: str) -> dict:
    """The llama-cpp-python bug of issue 17: each token reports the next position's log-prob."""
    rec = ECHO[prompt]
    return _reply(rec["tokens"], [None, *rec["logprobs"][2:], -12.894], prompt)


def constant_logprobs(prompt: str) -> dict:
    rec = ECHO[prompt]
    return _reply(rec["tokens"], [None] + [-0.5] * (len(rec["tokens"]) - 1), prompt)


def shifted_down(prompt: str) -> dict:
    """Every log-prob 10 nats too low (normalised over the wrong set): the order is right."""
    rec = ECHO[prompt]
    return _reply(rec["tokens"], [None] + [lp - 10 for lp in rec["logprobs"][1:]], prompt)


def raw_logits(prompt: str) -> dict:
    """Logits instead of log-probs: positive values, the order right."""
    rec = ECHO[prompt]
    return _reply(rec["tokens"], [None] + [lp + 20 for lp in rec["logprobs"][1:]], prompt)


def spaces_dropped(prompt: str) -> dict:
    """Tokens decoded one by one without their leading space (SentencePiece-style)."""
    rec = ECHO[prompt]
    return _reply([t.lstrip(" ") for t in rec["tokens"]], rec["logprobs"], prompt)


def candidate_merged(prompt: str) -> dict:
    """The context's last token and the candidate's first as one token."""
    rec = ECHO[prompt]
    tokens = rec["tokens"][:-3] + [rec["tokens"][-3] + rec["tokens"][-2], rec["tokens"][-1]]
    return _reply(tokens, rec["logprobs"][:-2] + [rec["logprobs"][-1]], prompt)


def _generated(token: str, logprob: float, prompt: str) -> dict:
    lp = {"tokens": [token], "token_logprobs": [logprob], "text_offset": [len(prompt)],
          "top_logprobs": [{token: logprob}]}
    return {"id": "cmpl-2", "object": "text_completion", "created": 0, "model": "smollm2",
            "choices": [{"index": 0, "text": token, "finish_reason": "length", "logprobs": lp}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}}


def truthful(prompt: str) -> dict:
    """Generation after the probe's context: the greedy " Friday" with its true log-prob (also
    what llama-cpp-python's server generates, shifted echo or not)."""
    return _generated(PROBE_LIKELY, ECHO[prompt + PROBE_LIKELY]["logprobs"][-1], prompt)


def consistent_with(shape):
    """Generation that reports " Friday" with the log-prob `shape`'s echo gives it."""
    def generate(prompt: str) -> dict:
        lp = shape(prompt + PROBE_LIKELY)["choices"][0]["logprobs"]
        return _generated(PROBE_LIKELY, lp["token_logprobs"][lp["tokens"].index(PROBE_LIKELY)],
                          prompt)
    return generate


def llama_cpp_replay(body: dict) -> dict:
    """The recorded reply of llama-cpp-python's server to the same prompt and echo flag."""
    for r in LLAMACPP["llamacpp_replies"]:
        if (r["request"]["prompt"], r["request"].get("echo", False)) == (
                body["prompt"], body.get("echo", False)):
            return r["response"]
    raise KeyError(f"no recorded llama-cpp-python reply to {body['prompt']!r}")


class _Stub(JSONHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.body()
        self.server.bodies.append(body)
        if self.server.replay is not None:
            self.reply(self.server.replay(body))
        elif body.get("echo"):
            self.reply(self.server.respond(body["prompt"]))
        else:
            self.reply(self.server.generate(body["prompt"]))


@pytest.fixture
def server():
    """A completions stub on 127.0.0.1; set `.respond` to one of the echo shapes above and
    `.generate` to the generation replies (or `.replay` to answer every body)."""
    with serving(_Stub) as httpd:
        httpd.respond, httpd.generate, httpd.replay, httpd.bodies = vllm_shape, truthful, None, []
        yield httpd


def _engine(server) -> OpenAIEngine:
    return OpenAIEngine(server.url, MODEL, served_model="smollm2")


@pytest.mark.parametrize("shape", [vllm_shape, llama_cpp_shape])
def test_verdict_scores_equal_the_local_engine_in_both_echo_shapes(server, shape):
    server.respond = shape
    request = ScoreRequest(messages=RECORDED["verdict_messages"],
                           candidates=("Equal", "Not Equal"))
    (resp,) = _engine(server).score([request])
    assert resp.logprobs == pytest.approx(RECORDED["verdict_local_logprobs"], abs=1e-4)
    assert resp.num_tokens == tuple(RECORDED["verdict_local_num_tokens"]) == (1, 2)
    assert resp.prompt_tokens == 88
    assert all(b["echo"] and b["max_tokens"] == 1 for b in server.bodies)


@pytest.mark.parametrize("shape", [vllm_shape, llama_cpp_shape])
def test_a_two_token_candidate_sums_both_tokens(server, shape):
    server.respond = shape
    request = ScoreRequest(prompt=PROBE_CONTEXT, candidates=(" Friday", " Banana"))
    (resp,) = _engine(server).score([request])
    assert resp.num_tokens == (1, 2)  # " Ban" + "ana"
    assert resp.logprobs == pytest.approx((-0.09769, -15.9299 - 2.15312), abs=1e-6)
    (short,) = _engine(server).score([ScoreRequest(prompt="A, B,", candidates=(" C", " Q"))])
    assert short.logprobs == pytest.approx((-1.39026, -6.05159), abs=1e-6)


def test_an_echo_that_does_not_reconstruct_the_prompt_is_an_error(server):
    server.respond = spaces_dropped
    with pytest.raises(ServerScoreError, match=r"echo does not reconstruct the prompt: they "
                       r"part at character 7: echoed 'Monday,Tuesday.*they differ only in "
                       r"whitespace: the server decodes each token alone"):
        _engine(server).score([ScoreRequest(prompt=PROBE_CONTEXT, candidates=(" Friday",))])


def test_a_token_across_the_candidates_start_is_an_error(server):
    server.respond = candidate_merged
    with pytest.raises(ServerScoreError, match=r"no token boundary where the candidate ' Ban"):
        _engine(server).score([ScoreRequest(prompt=PROBE_CONTEXT, candidates=(" Banana",))])


def test_offsets_must_match_the_tokens():
    tokens, lps = ["A", ",", " B"], [None, -1.0, -2.0]
    assert candidate_logprobs(tokens, lps, [0, 1, 2], "A,", " B") == ([-2.0], 2)
    with pytest.raises(ServerScoreError, match="token ' B' at text_offset 3; expected 2"):
        candidate_logprobs(tokens, lps, [0, 1, 3], "A,", " B")
    # a leading BOS the prompt does not contain shifts every offset
    assert candidate_logprobs(["<s>", *tokens], [None, *lps], [0, 3, 4, 5], "A,", " B") == (
        [-2.0], 3)


def _spec(server, **kw) -> ModelSpec:
    return ModelSpec(model=MODEL, engine="openai", base_url=server.url, served_model="smollm2",
                     **kw)


def test_the_probe_accepts_a_sound_server_at_start_up(server):
    OpenAIEngine.from_spec(_spec(server))
    chat_probe, = LLAMACPP["vllm_shape_echo"]
    assert [(b["prompt"], bool(b.get("echo"))) for b in server.bodies] == [
        (PROBE_CONTEXT, False), (PROBE_CONTEXT + " Friday", True),
        (PROBE_CONTEXT + " Banana", True), (chat_probe, True)]


@pytest.mark.parametrize(("shape", "generate", "message"), [
    (shifted_logprobs, truthful,
     r"echo inconsistent with generation: after '.*' the echo gives ' Friday' -12.894 nats but "
     r"generating it at the same position gives -0.098 \(expected within 0.2\): the echo "
     r"reports prompt log-probs from the wrong position .*; and implausible log-probs: after "
     r"'.*', ' Friday' got -12.894 and ' Banana' -15.047 nats"),
    (constant_logprobs, None,
     r"implausible log-probs: .* ' Friday' got -0.500 and ' Banana' -1.000"),
    (shifted_down, None, r"implausible log-probs: .* ' Friday' got -10.098 and ' Banana' -38.083"),
    (raw_logits, None, r"implausible log-probs: .* ' Friday' got 19.902 and ' Banana' 21.917"),
    (spaces_dropped, truthful, r"score probe failed: ServerScoreError: echo does not "
                               r"reconstruct"),
])
def test_the_probe_refuses_an_implausible_server_naming_it(server, shape, generate, message):
    server.respond, server.generate = shape, generate or consistent_with(shape)
    with pytest.raises(ServerScoreError, match=rf"^{server.url} \(model 'smollm2'\): {message}"
                       ) as refused:
        OpenAIEngine.from_spec(_spec(server))
    assert str(refused.value).endswith("set probe_score: false in its model spec")
    if generate is None:  # consistent with its own echo: only the model-dependent bounds fire
        assert "inconsistent" not in str(refused.value)


def test_the_probe_refuses_llama_cpp_pythons_server_naming_its_two_faults(server):
    """Recorded replies of llama-cpp-python 0.3.36's server: its echo of a plain prompt reads
    each token's log-prob one position late, and its echo of a chat prompt drops the special
    tokens."""
    server.replay = llama_cpp_replay
    with pytest.raises(ServerScoreError) as refused:
        OpenAIEngine.from_spec(_spec(server))
    message = str(refused.value)
    assert message.startswith(f"{server.url} (model 'smollm2'): echo inconsistent with "
                              "generation: after 'Monday, Tuesday, Wednesday, Thursday,' the echo "
                              "gives ' Friday' -8.228 nats but generating it at the same position "
                              "gives -0.102")
    assert "; and implausible log-probs: after" in message
    assert ("; and score probe failed: ServerScoreError: echo does not reconstruct the prompt: "
            "they part at character 0: echoed 'system\\nYou are a hel' vs prompt "
            "'<|im_start|>system\\nY'") in message
    assert "the echo leaves out the prompt's special tokens (such as '<|im_start|>')" in message


def test_llama_cpp_pythons_echo_of_a_chat_prompt_is_refused_when_scoring(server):
    """Without the probe, the verdict request still fails loudly rather than misaligning."""
    server.replay = llama_cpp_replay
    engine = _engine(server)
    request = ScoreRequest(messages=RECORDED["verdict_messages"],
                           candidates=("Equal", "Not Equal"))
    with pytest.raises(ServerScoreError, match=r"leaves out the prompt's special tokens"):
        engine.score([request])


def test_the_probe_can_be_switched_off(server):
    server.respond = shifted_logprobs
    OpenAIEngine.from_spec(_spec(server, probe_score=False))
    assert server.bodies == []
