# Two entry points: `make reproduce` (the main job) and `make test` (the whole test suite).
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

.PHONY: reproduce reproduce-full sbc-full paper test validate env lint lock cohort bench clean

env: $(STAMP)

$(UV):
	python=$$(scripts/find_python.sh); \
	"$$python" -m pip install --quiet --disable-pip-version-check --target $(TOOLS) uv==$(UV_VERSION)

$(STAMP): uv.lock pyproject.toml | $(UV)
	python=$$(scripts/find_python.sh); \
	$(UV) sync --frozen --python "$$python"
	touch $@

FITS := positive_rate saturation saturation_per_subset exacerbation
FIT_FILES := $(foreach m,$(FITS),$(RESULTS)/fits/$(m)/fit.nc)

## reproduce: validate the bundled cohort, the frequentist analysis, every model fit and the LOO comparison
PLANS := cross_sectional paired prognostic mechanism mechanism_paired
POWER_FILES := $(foreach p,$(PLANS),$(RESULTS)/power/$(p)/power.csv)
MODEL_NAMES := positive_rate saturation saturation_per_subset exacerbation exacerbation_logit
#: SBC replicates per model: reduced in `make reproduce`, full size in `make sbc-full`.
SBC_DRAWS := 100
SBC_FULL_DRAWS := 500
SBC_FILES := $(foreach m,$(MODEL_NAMES),$(RESULTS)/sbc/$(m)/sbc_summary.csv)
SBC_FULL_FILES := $(foreach m,$(MODEL_NAMES),$(RESULTS)/sbc_full/$(m)/sbc_summary.csv)

reproduce: $(RESULTS)/frequentist/frequentist.csv $(FIT_FILES) $(RESULTS)/fits/loo_kappa.csv \
	$(RESULTS)/crossval/kfold_compare.csv $(POWER_FILES) $(SBC_FILES) \
	$(RESULTS)/sample_size_validation.csv $(RESULTS)/validation.log
	@echo "Results written under $(RESULTS)/ (see README.md, 'Outputs')."

## reproduce-full: `make reproduce` plus SBC at full size (every model, $(SBC_FULL_DRAWS) replicates)
reproduce-full: reproduce sbc-full

## sbc-full: simulation-based calibration of every model at full size
sbc-full: $(SBC_FULL_FILES)

$(RESULTS)/sbc/%/sbc_summary.csv: | $(STAMP)
	$(BIN)/cd49d sbc --model $* --draws $(SBC_DRAWS) --out $(RESULTS)/sbc/$* --workers 2 --no-progress

$(RESULTS)/sbc_full/%/sbc_summary.csv: | $(STAMP)
	$(BIN)/cd49d sbc --model $* --draws $(SBC_FULL_DRAWS) --out $(RESULTS)/sbc_full/$* \
		--workers 2 --no-progress

$(RESULTS)/frequentist/frequentist.csv: $(COHORT) | $(STAMP)
	$(BIN)/cd49d validate $(COHORT)
	$(BIN)/cd49d describe $(COHORT) --out $(RESULTS)/frequentist

$(RESULTS)/fits/%/fit.nc: $(COHORT) | $(STAMP)
	$(BIN)/cd49d fit $(COHORT) --model $* --out $(RESULTS)/fits/$*

$(RESULTS)/fits/loo_kappa.csv: $(RESULTS)/fits/saturation/fit.nc $(RESULTS)/fits/saturation_per_subset/fit.nc
	$(BIN)/cd49d compare $^ --out $@

$(RESULTS)/crossval/kfold_compare.csv: $(COHORT) | $(STAMP)
	$(BIN)/cd49d crossval $(COHORT) --model saturation --model saturation_per_subset --folds 5 \
		--out $(RESULTS)/crossval

# The default power plans at a reduced size: 100 replicates per cell, every one refitted by the
# Bayesian model (the full-size run is `cd49d power simulations/plans/NAME.toml --out DIR`,
# README "Planning a study").
$(RESULTS)/power/%/power.csv: simulations/plans/%.toml | $(STAMP)
	$(BIN)/cd49d power $< --out $(RESULTS)/power/$* --workers 2 --replicates 100 --no-progress

# The simulation study of the sample-size method (README "Sample size"): binomial draws, no fits,
# on every shipped plan's grid.
$(RESULTS)/sample_size_validation.csv: simulations/sample_size.py simulations/sample_size_validation.py \
		$(wildcard simulations/plans/*.toml) | $(STAMP)
	$(BIN)/python -m analysis.tab_sample_size_validation $@ --runs 2000

# Long statistical checks (e.g. MixedLM type-I error on 2000 null trials per design).
$(RESULTS)/validation.log: | $(STAMP)
	mkdir -p $(RESULTS)
	$(BIN)/python -m pytest -m validation -n 2 -p no:cacheprovider | tee $@.tmp
	mv $@.tmp $@

## paper: the pipeline (Snakefile) up to paper/manuscript.pdf, at the reduced scale of pipeline.yaml
paper: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 2 --config results=$(RESULTS)

## validate: the long statistical checks that `make test` leaves out (part of `make reproduce`)
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
