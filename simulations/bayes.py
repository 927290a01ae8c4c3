"""Analyse, Bayesian: refit the plan's analysis model to each simulated trial, gated.

The analysis model (``analysis.bayesian.model``; default ``positive_rate`` for the rate
endpoints, ``exacerbation_logit`` for the prognostic one) and its prior set are the plan's,
separate from the design prior that generated the data. The model is built and compiled once
per design (``n``) and process; each trial only swaps the data (``n_cells``,
``observed_n_cd49d_pos``, ``observed_exacerbation``, and ``observed_log_mfi_ratio`` where the
plan measures MFI). Two backends
(``analysis.bayesian.backend``):

- ``batch`` (the default): ``models.batch.BatchSampler``, the model's graph compiled to JAX
  and fitted to a whole batch of trials at once, every dataset gated;
- ``nutpie``: one nutpie call per trial (``models.fit.RefitSampler``), kept for comparison
  (``benchmarks/power_throughput.py``).

With the batch backend a trial whose fit still fails the gate after the batch sampler's own
retries is refitted once more by nutpie (the same PyMC graph, adapted from scratch, with its own
retry; ``NUTPIE_FALLBACK``; compiled on first need). The batch sampler starts from a Laplace
approximation at the joint mode, which lies far from the posterior's bulk where a hierarchical
SD is near 0: at a true visit SD of 0 (paired design) it passed 2 of 16 trials at n = 8. Each
row names the sampler that gave it (``sampler``).

Decision rules on the endpoint ``theta`` (log ratio fold change, differential reduction, or
exacerbation log odds ratio), one result row each:

- ``bayes_direction``: ``P(theta > 0) >= direction_threshold`` (default 0.975; its nominal
  one-sided level ``1 - threshold`` is reported for the null run);
- ``bayes_rope``: ``P(theta > w) >= rope_probability``: the effect lies beyond the region of
  practical equivalence ``[-w, w]``, in the hypothesised direction (``w``: the plan's
  ``rope_half_width`` of the endpoint's family, on its scale);
- ``bayes_precision``: the 95% equal-tailed interval is narrower than the endpoint family's
  ``precision_width``.

A fit that fails the diagnostics gate (after every retry and the nutpie refit) gives rows
with ``status = "not_converged"`` and the failing diagnostics as the message; an exception gives
``status = "error"``. Neither is dropped.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import xarray as xr

from models.batch import MODEL_SETTINGS, BatchSampler, BatchSettings
from models.data import Cohort, log_mfi_ratio
from models.diagnostics import Thresholds
from models.estimands import estimand_draws
from models.fit import RefitSampler, SamplerSettings
from models.registry import MODELS
from simulations.analyses import endpoint_subset, failure_rows, planned_rules, result_row
from simulations.plan import Bayesian, Plan
from simulations.trials import cohort_config

INTERVAL_PROB = 0.95
#: Spawn key of the nutpie refit's seed stream (``nutpie_seed``), above any batch attempt's.
NUTPIE_STREAM = 1000
#: Warmup and target acceptance of each backend when the plan leaves them out: the batch
#: backend starts from a Laplace approximation (``models.batch``), nutpie from scratch.
BACKEND_DEFAULTS = {
    "batch": {"tune": 150, "target_accept": 0.8},
    "nutpie": {"tune": 1000, "target_accept": 0.9},
}

#: The nutpie refit of a trial that failed the batch sampler's gate: the posteriors that get
#: there have a hierarchical SD near 0 (visit SD 0, paired design). On three such trials at
#: n = 8 nutpie at the defaults above failed all three (tail ESS of ``tau_visit`` 79-392,
#: divergences); at 0.95 with twice the draws it passed two, at 0.99 the same two
#: (2026-11-26). ``draws_factor`` multiplies the plan's draws per chain.
NUTPIE_FALLBACK = {
    "tune": 1000,
    "target_accept": 0.95,
    "draws_factor": 2,
    "retry_target_accepts": (0.99,),
}

#: The batch backend's geometry settings per design (``models.batch.BatchSettings``). In the
#: paired design a patient's two samples share its vector, so the two group means are strongly
#: correlated: they need the dense Laplace metric, and so a mode found to convergence (with 100
#: L-BFGS iterations 6 of 8 paired trials at n = 24 got a poor metric and failed the gate, with
#: 400 none). Elsewhere the diagonal metric is faster (the dense one took twice as long per
#: refit at n = 32, cross-sectional).
BATCH_GEOMETRY = {
    "cross_sectional": {"metric": "diagonal"},
    "paired": {"metric": "dense", "laplace_iterations": 400},
    "prognostic": {"metric": "diagonal"},
}


def endpoint_draws(draws: dict, endpoint: str) -> xr.DataArray:
    """Posterior draws of an endpoint on its test scale (log for ratio fold changes), from the
    fit's estimand draws (``models.estimands.estimand_draws``)."""
    if endpoint == "exacerbation_log_or":
        return draws["exacerbation_log_or"]
    if endpoint.startswith("ratio_fold_change_"):
        return np.log(draws["ratio_fold_change"].sel(subset=endpoint_subset(endpoint)))
    if endpoint.startswith("kappa_difference_"):
        return draws["kappa_difference"].sel(subset=endpoint_subset(endpoint))
    return draws["differential_reduction"].sel(subset=endpoint_subset(endpoint))


def decision_rows(draws: np.ndarray, endpoint: str, rules: Bayesian) -> list[dict]:
    """One row per decision rule from an endpoint's posterior draws."""
    low, high = np.quantile(draws, [(1 - INTERVAL_PROB) / 2, (1 + INTERVAL_PROB) / 2])
    estimate = float(np.mean(draws))
    summary = {
        "estimate": estimate,
        "std_error": float(np.std(draws, ddof=1)),
        "ci_low": float(low),
        "ci_high": float(high),
    }
    outcomes = {
        "direction": (float(np.mean(draws > 0)), 1 - rules.direction_threshold),
        "rope": (float(np.mean(draws > rules.rope_for(endpoint))), np.nan),
        "precision": (float(high - low), np.nan),
    }
    rows = []
    for rule in rules.rules:
        value, nominal = outcomes[rule]
        success = {
            "direction": value >= rules.direction_threshold,
            "rope": value >= rules.rope_probability,
            "precision": value <= rules.precision_for(endpoint),
        }[rule]
        posterior_prob = value if rule != "precision" else np.nan
        rows.append(
            result_row(
                endpoint,
                f"bayes_{rule}",
                nominal,
                **summary,
                posterior_prob=posterior_prob,
                success=bool(success),
            )
        )
    return rows


def failed_rows(endpoints, rules: Bayesian, status: str, error_type: str, message: str):
    return failure_rows(planned_rules(endpoints, rules), status, error_type, message)


def nutpie_seed(seed: int) -> int:
    """The nutpie refit's seed, from a trial's analysis seed: a stream of its own, apart from
    the batch sampler's attempts (``SeedSequence(seed).spawn``: spawn keys 0, 1, ...)."""
    return int(np.random.SeedSequence(seed, spawn_key=(NUTPIE_STREAM,)).generate_state(1)[0])


class BayesianAnalysis:
    """The plan's analysis model for one design, compiled once, refitted to each trial."""

    def __init__(self, plan: Plan, template: pd.DataFrame) -> None:
        self.plan = plan
        self.spec = cohort_config(plan).spec
        rules = plan.analysis.bayesian
        cohort = Cohort.from_frame(template, self.spec, source="simulated trial")
        model = MODELS[plan.bayes_model].build(cohort, rules.priors)
        defaults = BACKEND_DEFAULTS[rules.backend]
        geometry = dict(BATCH_GEOMETRY[plan.trial.design])
        if rules.backend == "batch":
            model_settings = dict(MODEL_SETTINGS.get(plan.bayes_model, {}))
            accept_default = model_settings.pop("target_accept", defaults["target_accept"])
            defaults = {**defaults, "target_accept": accept_default}
            geometry.update(model_settings)
        tune = rules.tune if rules.tune is not None else defaults["tune"]
        accept = (
            rules.target_accept if rules.target_accept is not None else defaults["target_accept"]
        )
        self.thresholds = Thresholds()
        self.backend = rules.backend
        self.model, self.cohort = model, cohort
        self._fallback: RefitSampler | None = None
        if rules.backend == "batch":
            settings = BatchSettings(
                chains=rules.chains,
                tune=tune,
                draws=rules.draws,
                target_accept=accept,
                **geometry,
            )
            self.sampler = BatchSampler(model, self.data_names(), settings, self.thresholds)
        else:
            self.sampler = self.nutpie_sampler(tune=tune, accept=accept)

    def nutpie_sampler(self, *, tune: int, accept: float) -> RefitSampler:
        """The plan's model compiled for nutpie (low-rank metric where samples share patients)."""
        rules = self.plan.analysis.bayesian
        settings = SamplerSettings(
            draws=rules.draws, tune=tune, chains=rules.chains, target_accept=accept
        )
        return RefitSampler(self.model, settings.for_cohort(self.cohort))

    @property
    def nutpie(self) -> RefitSampler:
        """The nutpie sampler: the backend's own, or the batch backend's last resort
        (``NUTPIE_FALLBACK``, compiled on first need)."""
        if self.backend == "nutpie":
            return self.sampler
        if self._fallback is None:
            fallback = self.nutpie_sampler(
                tune=NUTPIE_FALLBACK["tune"], accept=NUTPIE_FALLBACK["target_accept"]
            )
            fallback.settings = replace(
                fallback.settings,
                draws=NUTPIE_FALLBACK["draws_factor"] * fallback.settings.draws,
                retry_target_accepts=NUTPIE_FALLBACK["retry_target_accepts"],
            )
            self._fallback = fallback
        return self._fallback

    def data_names(self) -> tuple[str, ...]:
        names = ("n_cells", "observed_n_cd49d_pos")
        if self.plan.trial.measures_mfi:
            names = (*names, "observed_log_mfi_ratio")
        return (*names, "observed_exacerbation") if self.prognostic else names

    @property
    def prognostic(self) -> bool:
        return self.plan.trial.design == "prognostic"

    def data_of(self, dataset: pd.DataFrame) -> dict[str, np.ndarray]:
        data = {
            "n_cells": dataset["n_cells"].to_numpy(),
            "observed_n_cd49d_pos": dataset["n_cd49d_pos"].to_numpy(),
        }
        if self.plan.trial.measures_mfi:  # every row of a trial that measures MFI has it
            data["observed_log_mfi_ratio"] = log_mfi_ratio(dataset)
        if self.prognostic:
            treated = dataset.drop_duplicates("subject_id")
            treated = treated[treated["group"] == "MS_NTZ"]
            data["observed_exacerbation"] = treated["exacerbation"].to_numpy()
        return data

    def analyse_batch(self, datasets: list[pd.DataFrame], seeds: list[int]) -> list[list[dict]]:
        """Rows for every endpoint and rule of each trial of a batch."""
        if self.backend == "nutpie":
            return [
                self.analyse_one(dataset, seed)
                for dataset, seed in zip(datasets, seeds, strict=True)
            ]
        try:
            fits = self.sampler.fit([self.data_of(d) for d in datasets], seeds)
        except Exception as err:  # the whole batch failed: every trial gets the error
            return [self.failed(err, "batch") for _ in datasets]
        endpoints = self.batch_endpoint_draws(fits)
        rows = []
        for i, (fit, dataset, seed) in enumerate(zip(fits, datasets, seeds, strict=True)):
            if fit.passed:
                rows.append(self.rows_of(fit.report, lambda i=i: endpoints[i], "batch"))
            else:
                rows.append(self.analyse_one(dataset, nutpie_seed(seed)))
        return rows

    def batch_endpoint_draws(self, fits: list) -> list[dict[str, np.ndarray]]:
        """Every endpoint's draws of each fit that passed the gate (an empty dict for one that
        failed), the estimands computed once for all fits with the same number of draws,
        stacked along a ``dataset`` axis."""
        needed = ["pct_pos", "kappa", "exacerbation_log_or"]  # what the endpoints are made of
        by_shape: dict[tuple, list[int]] = {}
        for i, fit in enumerate(fits):
            if fit.passed:
                by_shape.setdefault(fit.draws.shape, []).append(i)
        endpoints: list[dict[str, np.ndarray]] = [{} for _ in fits]
        for group in by_shape.values():
            posterior = self.sampler.stacked_posterior([fits[i] for i in group], needed)
            draws = estimand_draws(posterior, self.spec)
            for endpoint in self.plan.trial.endpoints:
                values = endpoint_draws(draws, endpoint).transpose("dataset", ...).values
                for i, fit_values in zip(group, values, strict=True):
                    endpoints[i][endpoint] = fit_values.ravel()
        return endpoints

    def analyse_one(self, dataset: pd.DataFrame, seed: int) -> list[dict]:
        """Rows for one trial fitted by nutpie."""
        try:
            result = self.nutpie.fit(self.data_of(dataset), seed=seed, thresholds=self.thresholds)
        except Exception as err:
            return self.failed(err, "nutpie")

        def endpoints():
            draws = estimand_draws(result.idata["posterior"].to_dataset(), self.spec)
            return {
                e: np.asarray(endpoint_draws(draws, e)).ravel() for e in self.plan.trial.endpoints
            }

        return self.rows_of(result.report, endpoints, "nutpie")

    def failed(self, err: Exception, sampler: str) -> list[dict]:
        rules, endpoints = self.plan.analysis.bayesian, self.plan.trial.endpoints
        rows = failed_rows(endpoints, rules, "error", type(err).__name__, str(err))
        return [row | {"sampler": sampler} for row in rows]

    def rows_of(self, report, endpoint_values, sampler: str) -> list[dict]:
        """Decision rows of a gated fit (``endpoint_values()``: each endpoint's draws), or
        ``not_converged`` rows naming the failures; ``sampler`` made the fit."""
        rules, endpoints = self.plan.analysis.bayesian, self.plan.trial.endpoints
        if not report.passed:
            message = "; ".join(report.failures)
            rows = failed_rows(endpoints, rules, "not_converged", "DiagnosticsGate", message)
        else:
            values = endpoint_values()
            rows = []
            for endpoint in endpoints:
                rows += decision_rows(values[endpoint], endpoint, rules)
        return [row | {"sampler": sampler} for row in rows]
