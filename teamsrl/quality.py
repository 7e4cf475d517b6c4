"""The instruction-validity judge: P(a rewrite is a real, self-contained task), no text parsing.

The expert often writes something that passes WizardLM's elimination rules but is no task: meta
text about the rewrite ("Here's a rewritten version ..."), an answer in place of a task, a
fragment that lost its context. `ValidityJudge.validity(texts)` scores each text in 0..1 with
one of three methods (`QualityConfig.method`):

- `embedding`: logistic regression on the MiniLM embeddings of the text's opening words plus a
  few cheap features (first word a task verb, a statement opening, meta words, a reference to an
  input the text does not hold, length), weights shipped as JSON in
  `teamsrl/data/validity_judge.json` (no pickle).
- `reviewer`: the reviewer model through `LLMClient.score` with a few-shot prompt: the softmax of
  the log-probabilities of "Valid task" vs "Not a task" (one reviewer query per text, cached and
  ledgered like every call).
- `combined`: the logistic regression with four more features from the reviewer, two short
  score queries per text (`REVIEWER_FEATURES`): its *fluency*, the log-probability of the text as
  the answer to "Write one task for an assistant to do." (per token and summed: incoherent drift
  and answers read as unlikely tasks), and its *reply*: given the text as a user message, how much
  likelier its reply starts "Please provide" / "Could you provide" or "I'm sorry" than "Sure" (a
  fragment makes it ask for the missing input; a real task gets "Sure"). The few-shot verdict
  is not among them: it costs a 400-token prompt and added nothing beside them
  (benchmarks/validity_judge.py's `combined_fewshot` row).
- `auto` (the default): the judge file's chosen method (best test accuracy) when the client's
  reviewer allows it, else `embedding` (`resolve_method`).

A fragment that leans on a context it does not hold ("the given criteria", "this table" or "how
to do that" with no quote, colon or new line; "Select A, B, C, or D" with no options; a bare
"Label: value": `points_at_missing_context`) is invalid outright, whatever the method
(`QualityConfig.missing_context`).

The reviewer-based weights and thresholds hold for the reviewer model they were fitted to (the
judge file names it; another model is refused). With SmolLM2-135M the few-shot verdict alone
ranks texts worse than chance (test AUC 0.41: it calls answers and fragments "Valid task" more
readily than tasks).

A text is judged invalid when its validity is below the threshold (chosen on the dev part of the
labelled set, `tests/data/validity/`, per method, and stored in the JSON). The weights and the
figures on the held-out test part come from `benchmarks/validity_judge.py`, which retrains them:

    .venv/bin/python benchmarks/validity_judge.py --write-judge
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from teamsrl.embeddings import Embedder, shared_embedder
from teamsrl.llm.protocol import LLMService
from teamsrl.llm.schema import ScoreRequest

DEFAULT_JUDGE_FILE = Path(__file__).parent / "data" / "validity_judge.json"
METHODS = ("embedding", "reviewer", "combined")
JUDGE_FORMAT = 2
REVIEWER_ROLE = "reviewer"
REVIEWER_CANDIDATES = ("Valid task", "Not a task")
REVIEWER_MAX_CHARS = 2000  # longer texts are cut for the reviewer prompt (rewrites are short)
# reviewer queries each method spends on a text the missing-context rule does not decide
REVIEWER_QUERIES_PER_TEXT = {"embedding": 0, "reviewer": 1, "combined": 2}
REVIEWER_FEATURES = ("fluency_per_token", "fluency_total", "reply_asks_for_input",
                     "reply_apologises")
_FLUENCY_ASK = "Write one task for an assistant to do."
REPLY_CANDIDATES = ("Please provide", "Could you provide", "I'm sorry", "Sure")

_REVIEWER_SYSTEM = (
    "You check texts written as instructions for an assistant. A valid task is a complete "
    "request or question that a person could answer on its own. Not a task: a note about "
    "rewriting, an answer or statement, or a fragment that misses its context.")
_REVIEWER_QUESTION = "Text: {text}\n\nIs this text a valid task? Answer Valid task or Not a task."
# Few-shot turns written for the judge (not taken from the labelled set), one per kind.
_REVIEWER_SHOTS = (
    ("Describe how the colour of a tomato changes as it ripens, and why.", "Valid task"),
    ("Here's a rewritten version of the instruction with an extra requirement:", "Not a task"),
    ("Find the cheapest item in this table:\n| item | price |\n| pen | 2 |\n| book | 9 |",
     "Valid task"),
    ("Answer: The capital of Australia is Canberra, not Sydney.", "Not a task"),
    ("Include protein, having roughly 700-1000 calories and no eggs.", "Not a task"),
    ("What are three ways to save water at home, and which saves the most?", "Valid task"),
)

_META_START = re.compile(
    r"^\W*(here(?:'s| is| are)|sure\b|certainly|of course|okay|ok\b|great|i(?:'ve| have| will|"
    r"'ll)\b|this (?:instruction|rewrite|version|task)|the (?:new|rewritten|revised) |"
    r"(?:new|rewritten|revised|modified|updated) (?:instruction|version|task|prompt))",
    re.IGNORECASE)
_META_WORD = re.compile(r"\b(instructions?|rewrit\w*|rephras\w*)\b", re.IGNORECASE)
_LABEL_FIRST = re.compile(r"^\W*[A-Za-z][A-Za-z ]{0,19}:")
_LIST_FIRST = re.compile(r"^\W*(\d|[-*\u2022] )")
# "the sentence", "this table", "the given text": a task that needs an input it may not hold.
_CONTEXT_REF = re.compile(
    r"\b(the|this|that|these|those) (given |following |above |below |original |provided |"
    r"specified )?(sentences?|paragraph|text|list|table|code|data|facts|email|passage|article|"
    r"story|phrase|word|statements?|question|document|function|equation|instance|input|"
    r"abstract|calculation|problem|disease|symptom|room|items?)\b", re.IGNORECASE)
# "based on the given criteria", "the previous chat history", "the original meaning", "this
# instruction": a pointer at something outside the text, whatever noun follows.
_ELSEWHERE = re.compile(
    r"\b(given|following|above|below|original|provided|previous|aforementioned|chat history|"
    r"(?:this|the) instruction|the (?:sentence|text|list|table|criteria|passage|paragraph))\b",
    re.IGNORECASE)
# A pronoun with nothing to stand for: "how to do that", "how this will help".
_DANGLING = re.compile(
    r"\b(?:do|does|did|doing) (?:that|this|it)\b"
    r"|\b(?:how|why|whether) (?:this|that) (?:is|will|was|can|could|would|does|has|works?|"
    r"helps?)\b", re.IGNORECASE)
# Options named but not given: "Select A, B, C, or D" with no "(A) ..." or "A. ..." in the text.
_OPTIONS_NAMED = re.compile(r"\b[A-D], [A-D],? (?:or|and) [A-D]\b")
_OPTIONS_GIVEN = re.compile(r"(?:^|\s)\(?[A-D][).]\s")
# "Behavior: cry.", "List: [1, 2, 5]": a label and a value.
_LABEL_VALUE = re.compile(r"^([A-Za-z][\w ]{0,24}):\s*(.*)$", re.DOTALL)
TASK_VERBS = frozenset("""
write explain describe list name give generate create compute calculate find suggest compare
identify classify summarize summarise translate tell make provide design solve recommend analyze
analyse convert choose determine sort predict plan draft estimate answer discuss rewrite imagine
evaluate outline develop construct propose consider read extract rank select detect decide fill
complete add replace correct check count prove show use help rate fix edit implement introduce
highlight emphasize emphasise define illustrate demonstrate build compose brainstorm prepare
organize organise research investigate examine assess review justify argue paraphrase improve
modify format output return print draw paint sketch debug test optimize reorder arrange group
label match map combine merge split simplify expand shorten cite quote invent craft produce
devise formulate express state specify include remove delete insert change transform turn
reverse measure forecast interpret clarify elaborate visualize visualise mention offer promote
share teach instruct advise
""".split())
_QUESTION_WORDS = frozenset("""
how what why which who when where whom whose is are can do does should could would will was were
did has have
""".split())
_STATEMENT_WORDS = frozenset("""
the this that these those a an it its in our my your there here his her their i we you
""".split())
CHEAP_FEATURES = ("verb_first", "question", "statement_first", "list_first", "label_first",
                  "meta_start", "meta_word", "missing_context", "refers_to_context", "log_words",
                  "points_elsewhere")
OPENINGS = (3, 6)  # the judge embeds the text's first 3 and first 6 words


def _holds_input(text: str) -> bool:
    """Whether `text` could carry an input of its own: a new line, a quote or a colon."""
    return "\n" in text or '"' in text or ":" in text


def cheap_features(text: str) -> list[float]:
    """The hand-made features beside the embeddings, each in 0..1 (`CHEAP_FEATURES`)."""
    stripped = text.strip()
    words = stripped.split()
    first = re.sub(r"[^a-z']", "", words[0].lower()) if words else ""
    refers = bool(_CONTEXT_REF.search(stripped))
    holds_input = _holds_input(stripped)
    return [
        float(first in TASK_VERBS),
        float(first in _QUESTION_WORDS or stripped.endswith("?")),
        float(first in _STATEMENT_WORDS),
        float(bool(_LIST_FIRST.search(stripped))),
        float(bool(_LABEL_FIRST.search(stripped))),
        float(bool(_META_START.search(stripped))),
        float(bool(_META_WORD.search(stripped))),
        float(refers and not holds_input),
        float(refers),
        min(math.log1p(len(words)) / 5.0, 1.0),
        float(bool(_ELSEWHERE.search(stripped))),
    ]


def points_at_missing_context(text: str) -> bool:
    """Whether `text` is a fragment that leans on a context it does not hold:
    - it points at an input: "the sentence", "this table", "based on the given criteria", "the
      previous chat history", or a pronoun with nothing to stand for ("explain how to do that",
      "discuss how this will help"), with no quote, colon or new line that could carry it;
    - it names options it does not give ("Select A, B, C, or D");
    - it is a label and a value with no task ("Behavior: cry.", "List: [1, 2, 5]"; a task verb
      as the label with a quoted input, "Translate: \"...\"", is a task).
    Such a text cannot be done on its own, however task-like it reads, so the judge calls it
    invalid outright (`QualityConfig.missing_context`)."""
    stripped = text.strip()
    if not _holds_input(stripped) and (_CONTEXT_REF.search(stripped) or
                                       _ELSEWHERE.search(stripped) or
                                       _DANGLING.search(stripped)):
        return True
    if _OPTIONS_NAMED.search(stripped) and not _OPTIONS_GIVEN.search(stripped):
        return True
    return _label_and_value(stripped)


def _label_and_value(text: str) -> bool:
    """"Label: value" and no task verb after the colon (see `points_at_missing_context`)."""
    match = _LABEL_VALUE.match(text)
    if match is None:
        return False
    label, value = match.group(1).split(), match.group(2)
    if any(w in TASK_VERBS for w in re.findall(r"[a-z']+", value.lower())) or "?" in value:
        return False
    return not (label[0].lower() in TASK_VERBS and ('"' in value or "\n" in value))


def opening(text: str, words: int) -> str:
    """The first `words` words of `text` (where a task shows its form: "Explain how", "The
    answer is", "This instruction")."""
    return " ".join(text.split()[:words])


def feature_names(dim: int) -> list[str]:
    """Column names of `text_features` for an embedder of width `dim`."""
    return [f"open{n}_{i}" for n in OPENINGS for i in range(dim)] + list(CHEAP_FEATURES)


def reviewer_request(text: str) -> ScoreRequest:
    """The reviewer's few-shot scoring request: "Valid task" vs "Not a task" after `text`."""
    messages = [{"role": "system", "content": _REVIEWER_SYSTEM}]
    for shot, answer in _REVIEWER_SHOTS:
        messages.append({"role": "user", "content": _REVIEWER_QUESTION.format(text=shot)})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": _REVIEWER_QUESTION.format(text=_body(text))})
    return ScoreRequest(candidates=REVIEWER_CANDIDATES, messages=tuple(messages))


def fluency_request(text: str) -> ScoreRequest:
    """The reviewer's fluency request: log P(text) as the answer to "Write one task ..."."""
    return ScoreRequest(candidates=(_body(text),),
                        messages=({"role": "user", "content": _FLUENCY_ASK},))


def reply_request(text: str) -> ScoreRequest:
    """The reviewer's reply request: the text as a user message, `REPLY_CANDIDATES` as the
    possible starts of the reply."""
    return ScoreRequest(candidates=REPLY_CANDIDATES,
                        messages=({"role": "user", "content": _body(text)},))


def _body(text: str) -> str:
    """The text as the reviewer sees it: stripped, cut at `REVIEWER_MAX_CHARS`."""
    return text.strip()[:REVIEWER_MAX_CHARS] or "(empty)"


def reviewer_prompt_digest() -> str:
    """Digest of the reviewer prompts (few-shot, fluency, reply): a judge file's reviewer-based
    weights hold for these only."""
    probes = (reviewer_request("{text}"), fluency_request("{text}"), reply_request("{text}"))
    payload = json.dumps([[list(p.messages), list(p.candidates)] for p in probes],
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def text_features(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """One row per text: the embedding of each opening (`OPENINGS`), then `CHEAP_FEATURES`.

    Openings, not the whole text: on the dev set the whole text's embedding mostly encodes the
    topic, which does not carry over to other seeds (out-of-fold AUC 0.57, grouped by seed);
    the openings' embeddings carry the form (0.80 with the cheap features)."""
    texts = list(texts)
    cheap = np.array([cheap_features(t) for t in texts], dtype=np.float32)
    blocks = [embedder.encode([opening(t, n) for t in texts]) for n in OPENINGS]
    return np.hstack([*blocks, cheap.reshape(len(texts), -1)])


def reviewer_logodds(client: LLMService, texts: list[str], stage: str | None = None
                     ) -> np.ndarray:
    """log P("Valid task") - log P("Not a task") per text: one reviewer score query each,
    through the client (cache and ledger; under the client's stage unless `stage` names one)."""
    responses = client.score(REVIEWER_ROLE, [reviewer_request(t) for t in texts], stage=stage)
    return np.array([r.logprobs[0] - r.logprobs[1] for r in responses], dtype=np.float64)


def reviewer_signals(client: LLMService, texts: list[str], stage: str | None = None
                     ) -> np.ndarray:
    """`REVIEWER_FEATURES` per text (rows), from two short reviewer score queries a text sent as
    one batch through the client: the fluency (log-probability of the text as a task, per token
    / 5 and summed / 100) and the reply (log-odds of asking for input, and of apologising,
    against "Sure", / 10)."""
    texts = list(texts)
    responses = client.score(REVIEWER_ROLE, [fluency_request(t) for t in texts]
                             + [reply_request(t) for t in texts], stage=stage)
    fluency, reply = responses[:len(texts)], responses[len(texts):]
    total = np.array([r.logprobs[0] for r in fluency], dtype=np.float64)
    tokens = np.array([max(r.num_tokens[0], 1) for r in fluency], dtype=np.float64)
    lp = np.array([r.logprobs for r in reply], dtype=np.float64).reshape(len(texts), 4)
    asks = np.logaddexp(lp[:, 0], lp[:, 1])
    return np.stack([total / tokens / 5.0, total / 100.0, (asks - lp[:, 3]) / 10.0,
                     (lp[:, 2] - lp[:, 3]) / 10.0], axis=1)


@dataclass
class LinearModel:
    """Logistic regression weights: validity = sigmoid(features . coef + intercept)."""

    features: list[str]
    coef: list[float]
    intercept: float
    threshold: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(valid) for each row of `x` (columns in `features` order)."""
        if x.shape[1] != len(self.coef):
            raise ValueError(f"judge weights: expected {len(self.coef)} feature columns, got "
                             f"{x.shape[1]}")
        z = x.astype(np.float64) @ np.asarray(self.coef, dtype=np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class JudgeFile:
    """The shipped judge: linear models per method, the reviewer threshold, provenance."""

    embedder: str
    embedding_dim: int
    reviewer_model: str
    reviewer_prompt: str
    embedding: LinearModel
    combined: LinearModel | None
    reviewer_threshold: float
    provenance: dict

    def threshold(self, method: str) -> float:
        """The dev-chosen threshold of `method`."""
        if method == "reviewer":
            return self.reviewer_threshold
        model = self.embedding if method == "embedding" else self.combined
        if model is None:
            raise ValueError(f"judge file has no {method!r} model; retrain with "
                             "benchmarks/validity_judge.py --write-judge")
        return model.threshold

    def save(self, path: str | Path) -> None:
        """Write the judge as JSON (the one place it is serialised)."""
        data = {"format": JUDGE_FORMAT} | asdict(self)
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path | None = None) -> JudgeFile:
        """Read a judge JSON file (default: the one shipped in the package)."""
        path = Path(path) if path is not None else DEFAULT_JUDGE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"judge file {str(path)!r}: not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"judge file {str(path)!r}: invalid JSON ({e.msg})") from None
        if data.get("format") != JUDGE_FORMAT:
            raise ValueError(f"judge file {str(path)!r}: format {data.get('format')!r}, "
                             f"expected {JUDGE_FORMAT}")
        combined = data.get("combined")
        return cls(data["embedder"], int(data["embedding_dim"]), data["reviewer_model"],
                   data["reviewer_prompt"],
                   LinearModel(**data["embedding"]),
                   LinearModel(**combined) if combined else None,
                   float(data["reviewer_threshold"]), dict(data.get("provenance", {})))


class QualityConfig(BaseModel):
    """How rewrites are judged valid instructions (`ValidityJudge`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    method: Literal["auto", "embedding", "reviewer", "combined"] = Field(
        "auto", description="embedding: logistic regression on MiniLM embeddings of the "
        "opening words + cheap features (no LLM query; fits any reviewer); reviewer: the "
        "reviewer's few-shot P('Valid task') (one reviewer query per text); combined: the "
        "regression with the reviewer's fluency and reply as features (two short reviewer "
        "queries per text; only for the reviewer model the judge file was fitted to). auto "
        "(default): the judge file's chosen method (best accuracy on the labelled test part, "
        "benchmarks/results/validity_judge.json: combined 0.86, embedding 0.84, reviewer alone "
        "0.75 = calling everything invalid) when the client's reviewer allows it, else "
        "embedding")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="a text whose validity is below this is judged not "
        "an instruction; None: the method's threshold chosen on the dev set (in the judge file)")
    judge_file: str | None = Field(
        None, description="judge weights (JSON); None: teamsrl/data/validity_judge.json")
    missing_context: Literal["invalid", "model"] = Field(
        "invalid", description="a fragment that leans on a context it does not hold ('the "
        "given criteria', 'this table', 'how to do that' with no quote, colon or new line; "
        "options named but not given; a bare 'Label: value': points_at_missing_context): "
        "invalid = validity 0 whatever the model says (default; of the 514 labelled rewrites in "
        "tests/data/validity it fires on 89 invalid ones and 12 valid tasks); model = leave it "
        "to the model")


def resolve_method(method: str, weights: JudgeFile, client: LLMService | None) -> str:
    """The method `auto` stands for: the judge file's chosen method (best test accuracy,
    `provenance.chosen_method`) when it can run here, else `embedding` (fits any reviewer, asks
    no model). A reviewer-based method can run when the client's reviewer is the model the file
    was fitted to, with this code's reviewer prompts. Any other method is returned as it is."""
    if method != "auto":
        return method
    chosen = weights.provenance.get("chosen_method", "embedding")
    if chosen == "embedding":
        return chosen
    fitted = ((chosen != "combined" or weights.combined is not None) and client is not None
              and client.spec(REVIEWER_ROLE).model == weights.reviewer_model
              and weights.reviewer_prompt == reviewer_prompt_digest())
    return chosen if fitted else "embedding"


class ValidityJudge:
    """Scores texts with P(valid instruction) by the configured method."""

    def __init__(self, config: QualityConfig, weights: JudgeFile,
                 client: LLMService | None = None, embedder: Embedder | None = None) -> None:
        self.config = config
        self.weights = weights
        self.client = client
        self._embedder = embedder
        self.method = resolve_method(config.method, weights, client)
        if self.method != "embedding":
            if client is None:
                raise ValueError(f"quality.method = {self.method!r}: expected an LLM client "
                                 f"(LLMService) with a {REVIEWER_ROLE!r} role, got None")
            model = client.spec(REVIEWER_ROLE).model
            if model != weights.reviewer_model:
                raise ValueError(f"quality.method = {self.method!r}: the judge was fitted to "
                                 f"reviewer {weights.reviewer_model!r}, the client's reviewer is "
                                 f"{model!r}; set env.quality.method=embedding (any reviewer) "
                                 "or retrain with benchmarks/validity_judge.py --write-judge")
            if weights.reviewer_prompt != reviewer_prompt_digest():
                raise ValueError(f"judge file: reviewer prompt {weights.reviewer_prompt!r} is "
                                 f"not this code's ({reviewer_prompt_digest()!r}); retrain with "
                                 "benchmarks/validity_judge.py --write-judge")
        self.threshold = (config.threshold if config.threshold is not None
                          else weights.threshold(self.method))

    @classmethod
    def from_config(cls, config: QualityConfig | None = None,
                    client: LLMService | None = None, embedder: Embedder | None = None
                    ) -> ValidityJudge:
        """Load the judge file the config names; the client is needed unless method=embedding."""
        config = config or QualityConfig()
        return cls(config, JudgeFile.load(config.judge_file), client=client, embedder=embedder)

    def use_embedder(self, embedder: Embedder) -> None:
        """Embed with `embedder` (checked on use: it must be the model the weights were trained
        on)."""
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        """The embedder the weights were trained with (the shared one unless injected)."""
        if self._embedder is None:
            self._embedder = shared_embedder(self.weights.embedder)
        model_id = getattr(self._embedder, "model_id", None)
        if model_id != self.weights.embedder or self._embedder.dim != self.weights.embedding_dim:
            raise ValueError(f"validity judge: embedder {model_id!r} ({self._embedder.dim} dims)"
                             f" is not the model the judge was trained on, "
                             f"{self.weights.embedder!r} ({self.weights.embedding_dim} dims); a "
                             "plumbing run with an embedding double sets "
                             "env.reward.invalid_fails=false and env.reward.validity_weight=0")
        return self._embedder

    def features(self, texts: list[str]) -> np.ndarray:
        """The `embedding` model's input rows (`text_features`)."""
        return text_features(self.embedder, texts)

    def reviewer_logodds(self, texts: list[str]) -> np.ndarray:
        """The reviewer's log-odds of "Valid task" per text (`reviewer_logodds`)."""
        return reviewer_logodds(self.client, texts)

    def reviewer_signals(self, texts: list[str]) -> np.ndarray:
        """The reviewer's fluency and reply features per text (`reviewer_signals`)."""
        return reviewer_signals(self.client, texts)

    def validity(self, texts: list[str]) -> list[float]:
        """P(valid instruction) for each text, in 0..1. A text the missing-context rule rules
        out is 0 and asks the model nothing (`reviewer_queries`)."""
        texts = list(texts)
        ruled = np.array([self.ruled_out(t) for t in texts], dtype=bool)
        p = np.zeros(len(texts))
        asked = [t for t, r in zip(texts, ruled, strict=True) if not r]
        if asked:
            p[~ruled] = self._model_validity(asked)
        return [float(v) for v in p]

    def _model_validity(self, texts: list[str]) -> np.ndarray:
        if self.method == "reviewer":
            return 1.0 / (1.0 + np.exp(-self.reviewer_logodds(texts)))
        if self.method == "embedding":
            return self.weights.embedding.probability(self.features(texts))
        x = np.hstack([self.features(texts), self.reviewer_signals(texts)])
        return self.weights.combined.probability(x)

    def ruled_out(self, text: str) -> bool:
        """Whether the missing-context rule decides `text` (validity 0, no model asked)."""
        return self.config.missing_context == "invalid" and points_at_missing_context(text)

    @property
    def reviewer_queries_per_text(self) -> int:
        """Reviewer queries `validity` spends on a text the rule does not decide (the embedding
        method asks no model; combined asks two short ones: fluency and reply)."""
        return REVIEWER_QUERIES_PER_TEXT[self.method]

    def reviewer_queries(self, text: str) -> int:
        """Reviewer queries `validity` spends on `text`: 0 where the rule decides it."""
        return 0 if self.ruled_out(text) else self.reviewer_queries_per_text

    def is_valid(self, texts: list[str]) -> list[bool]:
        """Whether each text's validity reaches the threshold."""
        return [v >= self.threshold for v in self.validity(texts)]
