"""The actions of the instruction MDP: rewriting operations and their prompt templates.

The six operations are those of TeaMs-RL / WizardLM Evol-Instruct (`breadth`, `add_constraints`,
`deepening`, `concretizing`, `increase_reasoning_steps`, `complicate_input`). The wording is ours:
short and example-led, because small expert models copy long rule lists and template markers into
their output. An optional `stop` ends an episode without a query; custom operations come from
YAML (`name` + `template`, the template holding one `{instruction}` placeholder).

Templating is safe: the instruction is substituted as a value, never parsed as a format string,
so braces, `%s`, backslashes or emoji in it are kept verbatim; over-long instructions are cut to a
token budget and the cut is recorded.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STOP = "stop"
PLACEHOLDER = "instruction"

# Measured with benchmarks/evolution_failures.py: the task sentence next to the instruction in
# the user turn (not in the system message) makes the 135M expert answer the seed less often.
_SYSTEM = "You rewrite instructions. Reply with the rewritten instruction only."
# The user message of a built-in operation; `{task}` is filled here, `{{instruction}}` per call.
_USER = "{task}\nInstruction: {{instruction}}"

_BUILTIN: dict[str, tuple[str, tuple[str, str]]] = {
    "breadth": (
        "Write a new, rarer instruction on the same topic, of similar length.",
        ("Name three fruits that are red.",
         "Describe how the colour of a tomato changes as it ripens."),
    ),
    "add_constraints": (
        "Add one extra requirement to this instruction.",
        ("Write a poem about autumn.",
         "Write a poem about autumn in exactly four lines, each line starting with the letter L."),
    ),
    "deepening": (
        "Make this instruction ask for a deeper, broader answer.",
        ("Why is the sky blue?",
         "Explain why the sky is blue, and why sunsets turn red, using how light scatters in air."),
    ),
    "concretizing": (
        "Replace general words in this instruction with specific ones.",
        ("Suggest a good book to read.",
         "Suggest a science-fiction novel from the 1960s for a teenager who loves space travel."),
    ),
    "increase_reasoning_steps": (
        "Make this instruction require several reasoning steps.",
        ("How much is 15% of 80?",
         "Compute 15% of 80, then add 12, then explain each step of the calculation."),
    ),
    "complicate_input": (
        "Add a small table, list or code snippet to this instruction.",
        ("Find the cheapest item.",
         "Find the cheapest item in this table:\n| item | price |\n| pen | 2 |\n| book | 9 |"),
    ),
}
DEFAULT_OPERATIONS = tuple(_BUILTIN)


class ActionSetError(ValueError):
    """An action set or template is invalid."""


def check_template(name: str, template: str) -> None:
    """A template must hold `{instruction}` and no other placeholder."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ActionSetError(
            f"operation {name!r}: template is not a valid format string ({e})"
        ) from None
    unknown = sorted({f for f in fields if f != PLACEHOLDER})
    if unknown:
        raise ActionSetError(
            f"operation {name!r}: template has unknown placeholder(s) {unknown}; "
            f"expected only {{{PLACEHOLDER}}} (write literal braces as {{{{ and }}}})"
        )
    if PLACEHOLDER not in fields:
        raise ActionSetError(f"operation {name!r}: template must contain {{{PLACEHOLDER}}}")


class OperationSpec(BaseModel):
    """A custom operation declared in YAML."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                      description="action name (letters, digits, underscore)")
    template: str = Field(description="user message; `{instruction}` is the current instruction")
    system: str | None = Field(None, description="optional system message")

    @model_validator(mode="after")
    def _template_ok(self) -> OperationSpec:
        if self.name == STOP:
            raise ValueError("'stop' is reserved; set include_stop: true instead")
        check_template(self.name, self.template)
        return self


class ActionSetConfig(BaseModel):
    """Which operations the policy may choose."""

    model_config = ConfigDict(extra="forbid")
    operations: list[str] = Field(default_factory=lambda: list(DEFAULT_OPERATIONS),
                                  description=f"built-in operations, any of {DEFAULT_OPERATIONS}")
    custom: list[OperationSpec] = Field(default_factory=list, description="extra operations")
    include_stop: bool = Field(False, description="add a `stop` action that ends the episode "
                               "without a query")

    @field_validator("operations")
    @classmethod
    def _known(cls, ops: list[str]) -> list[str]:
        for op in ops:
            if op not in _BUILTIN:
                raise ValueError(f"unknown operation {op!r}; expected one of {DEFAULT_OPERATIONS}")
        return ops

    @model_validator(mode="after")
    def _unique_nonempty(self) -> ActionSetConfig:
        names = self.names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate action name(s) {dupes}")
        if not self.operations and not self.custom:
            raise ValueError("the action set has no operation; expected at least one")
        return self

    def names(self) -> list[str]:
        """Action names in index order."""
        return [*self.operations, *(c.name for c in self.custom)] + (
            [STOP] if self.include_stop else [])


@dataclass(frozen=True)
class Operation:
    """One action: how to prompt the expert, or (`stop`) no query at all."""

    name: str
    template: str = "{instruction}"
    system: str | None = None
    example: tuple[str, str] | None = None

    @property
    def queries(self) -> bool:
        """Whether taking this action sends a query to the expert."""
        return self.name != STOP

    def prompt_texts(self) -> tuple[str, ...]:
        """Texts of this prompt a rewrite must not copy: the example's answer and every sentence
        of four or more words of the system message and the template."""
        texts = [self.example[1]] if self.example else []
        for part in (self.system or "", self.template.replace("{" + PLACEHOLDER + "}", "\n")):
            texts += [t.strip() for t in re.split(r"(?<=[.!?:])\s+|\n", part)
                      if len(t.split()) >= 4]
        return tuple(texts)


@dataclass(frozen=True)
class RenderedPrompt:
    """Chat messages for the expert plus what happened to the instruction on the way."""

    messages: tuple[dict[str, str], ...]
    truncated: bool
    instruction_tokens: int


def truncate_to_tokens(text: str, budget: int, count_tokens: Callable[[str], int]
                       ) -> tuple[str, bool]:
    """Longest prefix of `text` within `budget` tokens (binary search on characters)."""
    if count_tokens(text) <= budget:
        return text, False
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


def approx_tokens(text: str) -> int:
    """Rough token count (4 characters a token) when no tokenizer is at hand."""
    return (len(text) + 3) // 4


class ActionSet:
    """The indexed actions of the MDP, and the prompts they send."""

    def __init__(self, operations: list[Operation]) -> None:
        names = [o.name for o in operations]
        if not names:
            raise ActionSetError("the action set has no operation; expected at least one")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ActionSetError(f"duplicate action name(s) {dupes}")
        self.operations = list(operations)
        self.names = names

    @classmethod
    def from_config(cls, config: ActionSetConfig | None = None) -> ActionSet:
        """Build from config (default: the paper's six operations)."""
        config = config or ActionSetConfig()
        ops = [Operation(n, template=_USER.format(task=_BUILTIN[n][0]),
                         system=_SYSTEM.format(task=_BUILTIN[n][0]) if _SYSTEM else None,
                         example=_BUILTIN[n][1])
               for n in config.operations]
        ops += [Operation(c.name, template=c.template, system=c.system) for c in config.custom]
        if config.include_stop:
            ops.append(Operation(STOP))
        return cls(ops)

    def __len__(self) -> int:
        return len(self.operations)

    def __getitem__(self, index: int) -> Operation:
        return self.operations[index]

    def index(self, name: str) -> int:
        """Index of an action by name; a clear error lists the valid names."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ActionSetError(f"unknown action {name!r}; expected one of {self.names}") from None

    def render(
        self,
        action: int | str,
        instruction: str,
        max_instruction_tokens: int = 384,
        count_tokens: Callable[[str], int] = approx_tokens,
    ) -> RenderedPrompt:
        """The expert's messages for applying `action` to `instruction`."""
        op = self.operations[self.index(action) if isinstance(action, str) else action]
        if not op.queries:
            raise ActionSetError(f"action {op.name!r} sends no query and has no prompt")
        text, truncated = truncate_to_tokens(instruction, max_instruction_tokens, count_tokens)
        messages = []
        if op.system:
            messages.append({"role": "system", "content": op.system})
        if op.example:
            example = op.template.format(instruction=op.example[0])
            messages.append({"role": "user", "content": example})
            messages.append({"role": "assistant", "content": op.example[1]})
        # format() substitutes the instruction as a value: braces inside it are not re-parsed.
        messages.append({"role": "user", "content": op.template.format(instruction=text)})
        return RenderedPrompt(tuple(messages), truncated, count_tokens(text))

    def render_for(self, client, action: int | str, instruction: str) -> RenderedPrompt:
        """`render` with the expert's prompt budget (`max_prompt_tokens`) and tokenizer, both
        from `client` (an `LLMClient` or a `ServeLLMClient`)."""
        return self.render(action, instruction, client.spec("expert").max_prompt_tokens,
                           lambda t: client.count_tokens("expert", t))
