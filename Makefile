# lmtrain: `make train` runs the main job, `make test` the tests; both create .venv when missing.
# This Makefile's folder ("" when make runs in it): `make -f <checkout>/Makefile <target>` from
# another folder uses the checkout's .venv and scripts (logs/ stays the current folder's, or
# $PROJECT_ROOT's). make splits a -f path at its spaces, so one with a space is refused (below).
SELF := $(lastword $(MAKEFILE_LIST))
HERE := $(patsubst ./%,%,$(dir $(SELF)))
VENV ?= $(HERE).venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Hydra overrides for train/eval, e.g. make train ARGS="experiment=shakespeare_char". ARGS,
# BENCH_ARGS, PYTEST_ARGS, DATA, NANOGPT and SWEEP reach the recipe's shell as typed ($(value X):
# make would read the $H of hydra.run.dir=$HOME/run as its own variable and pass OME/run); the
# shell then reads them as a plain command line does: $HOME expands, a Hydra ${...} needs single
# quotes (make train ARGS="'data.source.path=\${oc.env:CORPUS}'").
ARGS ?=
# Extra arguments for scripts/bench.py, e.g. make bench BENCH_ARGS="--repeats 5"
BENCH_ARGS ?=
# Tiny Shakespeare's input.txt for the benchmarks; empty: downloaded once into data/shakespeare.
DATA ?=
# A nanoGPT checkout with data/shakespeare_char/{train,val}.bin prepared, for the recipe
# benchmark (make bench NANOGPT=../nanoGPT); empty: the recipe is timed against HF's Trainer only.
NANOGPT ?=
# The sweep for `make report`; default: the newest logs/<task>/multiruns/<time>/ of any task under
# the runs' logs/ ($PROJECT_ROOT/logs when that is set, as paths.log_dir), newest by <time>, the
# start time hydra.sweep.dir names it by (configs/hydra/default.yaml), not by the time the folder
# last changed (a report written into an older sweep made that one the newest). A sweep folder of
# another name (a hydra.sweep.dir of your own) is never the default: pass SWEEP=<folder>.
SWEEP_TIME := [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9][0-9]-[0-9][0-9]-[0-9][0-9]
SWEEP ?= $(shell ls -d "$${PROJECT_ROOT:-.}"/logs/*/multiruns/*/ 2>/dev/null \
	| awk -F/ '$$(NF-1) ~ /^$(SWEEP_TIME)(_[0-9][0-9][0-9][0-9][0-9][0-9])?$$/ { print $$(NF-1) "\t" $$0 }' \
	| LC_ALL=C sort | tail -n 1 | cut -f 2-)
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow' -x"
PYTEST_ARGS ?=
DATA_ARG = $(if $(value DATA),--data "$(value DATA)")
SWEEP_DIR = $(if $(filter file,$(origin SWEEP)),$(SWEEP),$(value SWEEP))
# Test processes (pytest-xdist); each test file runs whole in one of them (module fixtures once).
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install venv-check train eval test bench report lint format clean-logs

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(SELF) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

ifneq ($(realpath $(SELF)),)
install: $(VENV)/.installed ## Create .venv and install lmtrain editable with dev extras
else
# SELF is what follows the -f path's last space, not this file: every target stops here, in one
# line (+: under make -n too), not at "No rule to make target" for the half of a path.
help: install
install:
	+@echo 'error: make -f $(subst ','\'',$(strip $(MAKEFILE_LIST))): make splits a path at its spaces and cannot find this checkout: cd to the checkout and run make $(or $(MAKECMDGOALS),help) there, or -f a link to it from a path without spaces' >&2; exit 1
endif

# A .venv that cannot run (a link to a venv that is gone; a venv whose Python was removed or
# upgraded) is named at every target, not met as "File exists" or "No such file" every time; so
# is one whose lmtrain is another checkout's (a .venv linked to a shared one runs that code).
venv-check:
	@if test -L "$(VENV)" && ! test -e "$(VENV)"; then \
		echo "error: $(VENV) links to $$(readlink "$(VENV)"), which does not exist: link it to a venv that does, or rm $(VENV) (the link), then make install" >&2; exit 1; fi
	@if { test -e "$(PY)" || test -L "$(PY)"; } && ! test -x "$(PY)"; then \
		echo "error: $(PY) cannot run (a link to a Python that was removed or upgraded since $(VENV) was made): rm -rf $(VENV), then make install" >&2; exit 1; fi
	@if test -x "$(PY)" && test -e "$(VENV)/.installed"; then \
		found=$$("$(PY)" -c 'import importlib.util as u; s = u.find_spec("lmtrain"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null); \
		if test -n "$$found" && test "$$(cd "$$found" && pwd -P)" != "$$(cd "$(HERE)src/lmtrain" 2>/dev/null && pwd -P)"; then \
		echo "error: $(VENV) runs lmtrain from $$found, not from this checkout's src/lmtrain (a venv shared with, or installed from, another checkout): $(PY) -m pip install -e '$(or $(HERE),.)[dev]' to run this one with it, or rm $(VENV) (a link: the link only), then make install" >&2; exit 1; fi; fi

# Re-runs only when pyproject.toml changes, so every target can depend on it cheaply.
# A .venv of an older Python (a first try with a too-old python3) is named, not reused forever.
$(VENV)/.installed: $(HERE)pyproject.toml | venv-check
	@if test -x $(PY) && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then \
		echo "error: $(VENV) holds Python $$($(PY) -c 'import platform; print(platform.python_version())'), lmtrain needs 3.10 or newer: rm -rf $(VENV), then make install PYTHON=python3.11" >&2; exit 1; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e "$(HERE).[dev]"
	touch $@

train: install ## Train on the default corpus (ARGS="key=value ..." for Hydra overrides)
	$(PY) -m lmtrain.train $(value ARGS)

eval: install ## Evaluate a checkpoint: make eval ARGS="ckpt_path=<file>"
	$(PY) -m lmtrain.eval $(value ARGS)

# lint, format and test act on the checkout wherever make runs (with -f from another folder they
# linted, reformatted or collected the current folder's files); test's paths are the checkout's.
test: install ## Run the test suite
	cd "$(HERE)." && "$(abspath $(PY))" -m pytest -n $(TEST_WORKERS) --dist loadfile $(value PYTEST_ARGS)

# BENCH_ARGS are checked first (bench.py --check-args: parsed and checked, nothing measured), so
# that a bad one is refused at once, not after the recipe benchmark's minutes.
bench: install ## Benchmarks: recipe vs nanoGPT and HF Trainer, Lightning vs raw loop, speed switches, data (logs/bench/latest.json)
	$(PY) $(HERE)scripts/bench.py --check-args $(DATA_ARG) $(value BENCH_ARGS)
	$(PY) $(HERE)scripts/bench_recipe.py $(DATA_ARG) $(if $(value NANOGPT),--nanogpt "$(value NANOGPT)")
	$(if $(value NANOGPT),$(PY) $(HERE)scripts/bench_recipe.py --recipe fast $(DATA_ARG) --nanogpt "$(value NANOGPT)")
	$(PY) $(HERE)scripts/bench.py $(DATA_ARG) $(value BENCH_ARGS)
	$(PY) $(HERE)scripts/bench_switches.py $(DATA_ARG)
	$(PY) $(HERE)scripts/bench_data.py

report: install ## Table and val/loss curves of a sweep (SWEEP=logs/<task>/multiruns/<time>)
	@test -n "$(SWEEP_DIR)" || { echo "error: no sweep under $${PROJECT_ROOT:-.}/logs/*/multiruns/ in a folder named by its start time (<date>_<time>): run one (python -m lmtrain.train -m ...) or pass SWEEP=<folder>" >&2; exit 1; }
	$(PY) -m lmtrain.report "$(SWEEP_DIR)"

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check "$(HERE)."
	$(VENV)/bin/ruff format --check "$(HERE)."

format: install ## ruff format and autofix
	$(VENV)/bin/ruff format "$(HERE)."
	$(VENV)/bin/ruff check --fix "$(HERE)."

# scripts/clean_logs.py: logs/ is under $PROJECT_ROOT when that is set, as the runs' paths.log_dir;
# a logs/ that is a link (to a scratch disk) is followed. Only logs/<task>/runs and
# logs/<task>/multiruns go, each run or sweep folder in them unless a live process holds its lock
# (a run still training, a sweep or one of its jobs: kept, named with the holder's pid); each
# deleted folder is printed. A folder of the user's own under logs/ (a corpus kept there) stays.
clean-logs: install ## Delete the run folders logs/<task>/runs and multiruns, but not those of live runs; keep logs/bench/, logs/gpu_check/ (results) and anything else in logs/
	@$(PY) $(HERE)scripts/clean_logs.py
