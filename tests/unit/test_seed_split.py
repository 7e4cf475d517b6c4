"""The seed split (teamsrl.seed_split): one seed file cut once into policy-training seeds,
generation seeds and reference tasks — deterministic, disjoint, recorded — and the refusals:
overlapping slices, a changed split under a run, reference tasks that are seeds of the run."""

from __future__ import annotations

import json
import random

import pytest

from teamsrl.config import ConfigError, load_config
from teamsrl.seed_split import (
    SLICES,
    SeedOverlapError,
    SeedSplit,
    SplitConfig,
    check_disjoint,
    read_slices,
    split_seeds,
    write_split,
)
from teamsrl.seeds import DEFAULT_SEEDS, Seed, load_seeds


def _bundled() -> list[Seed]:
    return load_seeds(DEFAULT_SEEDS).seeds


def test_bundled_seeds_carry_their_human_answers():
    seeds = _bundled()
    assert len(seeds) == 175 and all(s.output for s in seeds)
    first = json.loads(DEFAULT_SEEDS.open().readline())
    assert seeds[0].output == first["instances"][0]["output"].strip()


def test_split_is_deterministic_disjoint_and_complete():
    seeds, cfg = _bundled(), SplitConfig()
    slices = split_seeds(seeds, cfg, hash_seed=543)
    ids = {name: [s.id for s in members] for name, members in slices.items()}
    assert sum(len(v) for v in ids.values()) == 175
    assert set().union(*map(set, ids.values())) == {s.id for s in seeds}
    for a in SLICES:
        for b in SLICES:
            assert a == b or not set(ids[a]) & set(ids[b]), (a, b)
    assert [len(ids[n]) for n in SLICES] == [88, 52, 35]  # ~0.5 / 0.3 / 0.2 of 175
    check_disjoint(slices)
    # the same seeds in another order: the same slices (each kept in the input's order)
    shuffled = list(seeds)
    random.Random(0).shuffle(shuffled)
    again = split_seeds(shuffled, cfg, hash_seed=543)
    assert {n: sorted(s.id for s in v) for n, v in again.items()} == \
        {n: sorted(v) for n, v in ids.items()}
    assert ids["reference"] == [s.id for s in seeds if s.id in set(ids["reference"])]
    # another hash seed: another split
    other = split_seeds(seeds, cfg, hash_seed=544)
    assert [s.id for s in other["reference"]] != ids["reference"]


def test_duplicate_texts_stay_together_and_answerless_seeds_are_no_reference():
    seeds = [Seed(f"s{i}", f"Task number {i}.", output=f"Answer {i}." if i % 2 else "")
             for i in range(40)]
    seeds += [Seed("dup-of-s3", "task  NUMBER 3.", output="Another answer.")]
    slices = split_seeds(seeds, SplitConfig(), hash_seed=7)
    where = {s.id: name for name, members in slices.items() for s in members}
    assert where["dup-of-s3"] == where["s3"]
    assert all(s.output for s in slices["reference"]) and slices["reference"]
    check_disjoint(slices)


def test_overlapping_slices_are_refused_naming_the_seeds():
    a, b, c = Seed("t1", "Write a poem."), Seed("t2", "Sort the list."), Seed("t3", "Add 2+2.")
    with pytest.raises(SeedOverlapError, match=r"generation and reference share 1 seed\(s\): "
                       r"t2;"):
        check_disjoint({"policy_training": [a], "generation": [b], "reference": [b, c]})
    same_text = Seed("other-id", "  write a POEM. ")
    with pytest.raises(SeedOverlapError, match=r"policy_training and reference share 1 "
                       r"seed\(s\): t1 = other-id \(same text\)"):
        check_disjoint({"policy_training": [a], "generation": [b], "reference": [same_text]})


def test_shares_must_sum_to_one_and_name_the_key():
    with pytest.raises(ConfigError, match="expected the shares to sum to 1"):
        load_config(None, ["split.reference=0.5"])
    with pytest.raises(ConfigError, match="key 'split.generation' = 0"):
        load_config(None, ["split.generation=0", "split.policy_training=0.8"])


def test_write_split_records_files_that_read_back(tmp_path):
    config = load_config(None, [f"run_dir={tmp_path}"])
    record, folder = tmp_path / "seed-split.json", tmp_path / "seeds"
    split = write_split(config, record, folder)
    assert SeedSplit.read(record) == split and split.hash_seed == 543
    slices = read_slices(split, config)
    for name in SLICES:
        assert [s.id for s in slices[name]] == split.slices[name]
        assert load_seeds(split.files[name]).source == split.files[name]
    by_id = {s.id: s for s in _bundled()}
    for s in slices["reference"]:  # instruction, input and the human answer survive
        assert s == by_id[s.id]
    # a rerun reuses the split; another split under the same run is refused
    assert write_split(config, record, folder) == split
    changed = load_config(None, [f"run_dir={tmp_path}", "split.reference=0.1",
                                 "split.generation=0.4"])
    with pytest.raises(ValueError, match="records another split"):
        write_split(changed, record, folder)


def test_a_hand_edited_split_that_overlaps_is_refused_on_read(tmp_path):
    config = load_config(None, [f"run_dir={tmp_path}"])
    split = write_split(config, tmp_path / "seed-split.json", tmp_path / "seeds")
    leaked = split.slices["reference"][0]
    line = next(x for x in open(split.files["reference"]) if json.loads(x)["id"] == leaked)
    with open(split.files["generation"], "a") as f:
        f.write(line)
    with pytest.raises(SeedOverlapError, match=f"generation and reference share 1 seed.*{leaked}"):
        read_slices(split, config)


def test_too_few_seeds_for_a_slice_is_an_error(tmp_path):
    seeds = tmp_path / "one.jsonl"
    seeds.write_text('{"id": "only", "instruction": "Write a haiku."}\n')
    config = load_config(None, [f"env.seed_file={seeds}"])
    with pytest.raises(ValueError, match=r"split.generation = 0.3: 0 of 1 seeds"):
        write_split(config, tmp_path / "seed-split.json", tmp_path / "seeds")
