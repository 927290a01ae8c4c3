# Two entry points: `make reproduce` (the pipeline, to the manuscript) and `make test` (the tests).
# Both build .venv from uv.lock with a Python >= 3.12 found by scripts/find_python.sh.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := reproduce

UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced
RESULTS := results
COHORT := data/kimura2016_simulated.csv

export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export PYTHONHASHSEED := 0

.PHONY: reproduce reproduce-full test validate env lint lock cohort bench clean

env: $(STAMP)

$(UV):
	python=$$(scripts/find_python.sh); \
	"$$python" -m pip install --quiet --disable-pip-version-check --target $(TOOLS) uv==$(UV_VERSION)

$(STAMP): uv.lock pyproject.toml | $(UV)
	python=$$(scripts/find_python.sh); \
	$(UV) sync --frozen --python "$$python"
	touch $@

# The pipeline (Snakefile) declares every result, figure and the manuscript with their inputs and
# code; make only calls it. `make reproduce` runs pipeline.yaml's reduced scale, `make
# reproduce-full` the full one into $(RESULTS)/full (plans at their own size, every replicate
# refitted; SBC at 500 draws: hours).
CORES ?= $(shell nproc)
SNAKEMAKE := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete

## reproduce: the whole pipeline at the reduced scale, up to paper/manuscript.pdf
reproduce: $(STAMP)
	$(SNAKEMAKE) --config results=$(RESULTS)
	@echo "Results under $(RESULTS)/, the manuscript in paper/ (README.md, 'Outputs')."

## reproduce-full: the pipeline at full size (hours), results under $(RESULTS)/full
reproduce-full: $(STAMP)
	$(SNAKEMAKE) --config results=$(RESULTS)/full scale=full

## validate: the long statistical checks that `make test` leaves out (e.g. MixedLM type-I error
## on 2000 null trials per design; the sample-size validation study at full size)
validate: $(STAMP)
	$(BIN)/python -m pytest -m validation -n 2

## test: the test suite (all but the `validation` checks; see `make validate`)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## lock: refresh uv.lock and environment.yml's pins (the one command for updating dependencies)
lock: | $(UV)
	$(UV) lock --upgrade
	python=$$(scripts/find_python.sh); "$$python" scripts/write_environment_yml.py

## cohort: regenerate the bundled simulated cohort from its configuration and documented seed
cohort: $(STAMP)
	$(BIN)/cd49d simulate-cohort --out $(COHORT)

## bench: sampler benchmarks (installs the optional numpyro/JAX group first)
bench: $(STAMP)
	python=$$(scripts/find_python.sh); $(UV) sync --frozen --group bench --python "$$python"
	rm -f $(STAMP)
	$(BIN)/python benchmarks/fit_backends.py

clean:
	rm -rf $(VENV) $(TOOLS) $(RESULTS)
