# moe_router: `make demo` runs the pipeline end to end, `make test` runs every test.
# Both create .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv runtime test demo docs bench export lab clean-nbs clean

# The runtime (what `make demo` needs), then the dev extras on top (what `make test`, `make docs` and `make lab` need).
# torch comes through pip (which finds a machine's local CPU wheel), without compiling its 2,300 Python files to bytecode up
# front (15 s instead of 38 s); the rest through uv, which installs them in seconds instead of minutes (pip is the fallback).
UV_INSTALL = $(BIN)/python -m uv pip install -q --python $(BIN)/python -c constraints.txt
PIP_INSTALL = $(BIN)/python -m pip install -q -c constraints.txt

$(BIN)/.runtime: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP_INSTALL) --no-compile torch==2.13.0 uv
	$(UV_INSTALL) -e . || $(PIP_INSTALL) -e .
	touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(UV_INSTALL) -e '.[dev]' || $(PIP_INSTALL) -e '.[dev]'
	touch $@

runtime: $(BIN)/.runtime
venv: $(BIN)/.installed

# Two workers (pytest-xdist): each test file runs whole on one worker (its fixtures are built once and its summary test counts
# its cases), and each notebook is a scope of its own (tests/test_notebooks.py). The slowest tests are listed before the summary.
test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --durations=15 tests

demo: runtime
	$(BIN)/moe-router-demo --out runs/demo

docs: venv
	$(BIN)/python tools/build_docs.py

bench: venv
	$(BIN)/python bench/run_all.py

# JupyterLab on lab/, a scratch workspace outside nbs/ (ignored by git: nothing there reaches the docs, the sidebar
# or the tests), with a starter notebook on the latest run; on loopback (LAB_PORT=8888), printing the URL to open.
lab: venv
	$(BIN)/python tools/lab.py

export: venv
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

clean:
	rm -rf _docs _proc runs
