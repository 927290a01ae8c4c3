"""The batched sampler: posteriors agree with nutpie, results do not depend on the batch, the
gate is the one every fit passes, and failures are kept."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from models.batch import BatchSampler, BatchSettings
from models.data import Cohort
from models.diagnostics import Thresholds, check
from models.estimands import estimand_table
from models.fit import RefitSampler, SamplerSettings
from models.registry import MODELS
from simulations.plan import load_plan
from simulations.trials import Cell, TrialGenerator, cohort_config
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
DATA_NAMES = ("n_cells", "observed_n_cd49d_pos")


@pytest.fixture(scope="module")
def trials():
    """A cross-sectional plan's trials (8 + 8 patients) and a model built on one of them."""
    plan = load_plan(ROOT / "simulations" / "plans" / "cross_sectional.toml")
    generator = TrialGenerator(plan, Cell("alternative", 8))
    frames = [generator.draw(seed) for seed in range(6)]
    cohort = Cohort.from_frame(frames[0], cohort_config(plan).spec, source="trial")
    return frames, MODELS["positive_rate"].build(cohort), cohort.spec


def data_of(frame: pd.DataFrame) -> dict:
    return {
        "n_cells": frame["n_cells"].to_numpy(),
        "observed_n_cd49d_pos": frame["n_cd49d_pos"].to_numpy(),
    }


@pytest.fixture(scope="module")
def sampler(trials):
    return BatchSampler(trials[1], DATA_NAMES, BatchSettings(batch_size=4))


def test_a_datasets_draws_do_not_depend_on_its_batch(trials, sampler):
    frames = trials[0]
    together = sampler.fit([data_of(f) for f in frames], list(range(6)))  # two padded batches
    for index in (0, 5):
        alone = sampler.fit([data_of(frames[index])], [index])[0]
        assert alone.attempts == together[index].attempts
        np.testing.assert_array_equal(alone.draws, together[index].draws)
    assert all(fit.passed for fit in together)


def test_posteriors_agree_with_nutpie_within_a_tenth_of_a_posterior_sd(trials):
    """Long runs of both (4 x 10000 draws), so that Monte Carlo error (about 0.02 SD) stays
    below the tolerance: posterior mean and 2.5% / 97.5% quantiles of every estimand."""
    frames, model, spec = trials
    batch = BatchSampler(model, DATA_NAMES, BatchSettings(draws=10_000, batch_size=2))
    nutpie = RefitSampler(model, SamplerSettings(draws=10_000, tune=1000, chains=4))
    fits = batch.fit([data_of(f) for f in frames[:2]], [11, 12])
    for frame, fit in zip(frames[:2], fits, strict=True):
        reference = nutpie.fit(data_of(frame), seed=5)
        assert fit.passed and reference.passed
        ours = estimand_table(batch.posterior(fit), spec).set_index(["estimand", "group", "subset"])
        theirs = estimand_table(reference.idata["posterior"].to_dataset(), spec).set_index(
            ["estimand", "group", "subset"]
        )
        for column in ("mean", "q2.5", "q97.5"):
            gap = (ours[column] - theirs[column]).abs() / theirs["sd"]
            assert gap.max() < 0.1, (column, gap.idxmax(), gap.max())


def test_the_gate_is_the_one_of_every_fit(trials, sampler):
    """The batch gate's statistics equal ArviZ's (models.diagnostics.check) on the same draws."""
    fit = sampler.fit([data_of(trials[0][0])], [3])[0]
    posterior = sampler.posterior(fit)
    chains, draws = fit.energy.shape
    stats = xr.Dataset(
        {
            "diverging": (("chain", "draw"), np.zeros((chains, draws), bool)),
            "energy": (("chain", "draw"), fit.energy),
        }
    )
    report = check(xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats}))
    assert report.passed == fit.passed
    merged = report.table.merge(fit.report.table, on="parameter", suffixes=("_arviz", "_batch"))
    assert len(merged) == len(report.table) == len(fit.report.table)
    for column in ("rhat", "ess_bulk", "ess_tail"):
        np.testing.assert_allclose(merged[f"{column}_batch"], merged[f"{column}_arviz"], rtol=1e-9)


def test_a_fit_that_fails_the_gate_is_retried_and_kept(trials):
    strict = Thresholds(ess_bulk_min=1e9)
    failing = BatchSampler(trials[1], DATA_NAMES, BatchSettings(batch_size=2), strict)
    fits = failing.fit([data_of(f) for f in trials[0][:2]], [1, 2])
    assert len(fits) == 2
    for fit in fits:
        assert not fit.passed
        assert fit.attempts == ["hmc@0.8", "extend", "nuts@0.95"]
        assert fit.report.failures[0].startswith("bulk ESS < 1e+09 for ")
        assert fit.draws.shape[:2] == (4, 1000)  # the last attempt's draws, kept


def test_extension_continues_the_chains(trials, sampler):
    first = sampler.fit_attempt([data_of(trials[0][1])], [4], "hmc", 0.8)[0]
    longer = sampler.fit_attempt([data_of(trials[0][1])], [9], "extend", 0.8, [first])[0]
    assert longer.draws.shape[1] == 2 * first.draws.shape[1]
    np.testing.assert_array_equal(longer.draws[:, :1000], first.draws)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="at least 2 chains"):
        replace(BatchSettings(), chains=1)


def test_paired_trials_pass_the_gate_with_the_dense_metric_and_agree_with_nutpie():
    """In the paired design the two group means are strongly correlated (a patient's samples
    share its vector): the plan's batch settings use the dense Laplace metric, every trial
    passes the gate (most on the first attempt; the sample x subset SD splits the patients'
    variation further, and a few need longer chains), and the posterior means agree with
    nutpie's (with its low-rank mass matrix)."""
    from simulations.bayes import BayesianAnalysis

    plan = load_plan(ROOT / "simulations" / "plans" / "paired.toml")
    generator = TrialGenerator(plan, Cell("alternative", 16))
    frames = [generator.draw(seed) for seed in range(8)]
    analysis = BayesianAnalysis(plan, frames[0])
    assert analysis.sampler.settings.metric == "dense"
    fits = analysis.sampler.fit([analysis.data_of(f) for f in frames], list(range(8)))
    assert all(fit.passed for fit in fits), [fit.report.failures for fit in fits]
    first_attempt = sum(fit.attempts == ["hmc@0.8"] for fit in fits)
    assert first_attempt > len(fits) / 2, [fit.attempts for fit in fits]  # most (5 of 8 here)

    cohort = Cohort.from_frame(frames[0], analysis.spec, source="trial")
    # nutpie's diagonal mass matrix mixes slowly here too (bulk ESS about 170 of 4 x 1000
    # draws on the group means); its low-rank one, chosen for cohorts that share patients,
    # passes the gate at the default draws.
    settings = SamplerSettings().for_cohort(cohort)
    assert settings.mass_matrix == "low_rank"
    nutpie = RefitSampler(MODELS[plan.bayes_model].build(cohort), settings)
    reference = nutpie.fit(analysis.data_of(frames[0]), seed=5)
    assert reference.passed
    keys = ["estimand", "group", "subset"]
    ours = estimand_table(analysis.sampler.posterior(fits[0]), analysis.spec).set_index(keys)
    theirs = estimand_table(reference.idata["posterior"].to_dataset(), analysis.spec)
    theirs = theirs.set_index(keys)
    gap = (ours["mean"] - theirs["mean"]).abs() / theirs["sd"]  # Monte Carlo SE about 0.04
    assert gap.max() < 0.2, (gap.idxmax(), gap.max())


def test_mechanism_trials_are_refitted_with_the_per_subset_model_and_its_kappa_difference():
    """The mechanism plan's Bayesian rows come from ``saturation_per_subset`` behind the gate
    (400 L-BFGS iterations, target acceptance 0.9), and each row's estimate is the posterior
    mean of kappa_Treg - kappa_effector of that fit."""
    from simulations.bayes import BayesianAnalysis

    plan = load_plan(ROOT / "simulations" / "plans" / "mechanism.toml")
    frames = [TrialGenerator(plan, Cell("alternative", 8)).draw(seed) for seed in range(2)]
    analysis = BayesianAnalysis(plan, frames[0])
    assert analysis.sampler.settings.laplace_iterations == 400
    assert analysis.sampler.settings.target_accept == 0.9
    fits = analysis.sampler.fit([analysis.data_of(f) for f in frames], [11, 12])
    assert all(fit.passed for fit in fits), [fit.report.failures for fit in fits]
    endpoints = analysis.batch_endpoint_draws(fits)
    for fit, draws in zip(fits, endpoints, strict=True):
        kappa = analysis.sampler.posterior(fit, ["kappa"])["kappa"]
        rows = analysis.rows_of(fit.report, lambda draws=draws: draws, "batch")
        for row in rows:
            assert row["sampler"] == "batch"
            effector = row["endpoint"].rsplit("_", 1)[-1]
            expected = float((kappa.sel(subset="Treg") - kappa.sel(subset=effector)).mean())
            assert row["analysis"] == "bayes_direction" and row["status"] == "ok"
            assert row["estimate"] == pytest.approx(expected, rel=1e-9)


def test_a_trial_that_fails_the_batch_gate_is_refitted_by_nutpie_and_says_so():
    """After the batch sampler's own retries, a failed trial is refitted by nutpie on a seed
    stream of its own (twice the plan's draws): its rows are nutpie's gated fit, reproducibly,
    and name the sampler."""
    from models.estimands import estimand_draws
    from simulations.bayes import NUTPIE_FALLBACK, BayesianAnalysis, endpoint_draws, nutpie_seed

    plan = load_plan(ROOT / "simulations" / "plans" / "cross_sectional.toml")
    frames = [TrialGenerator(plan, Cell("alternative", 8)).draw(seed) for seed in range(2)]
    analysis = BayesianAnalysis(plan, frames[0])
    analysis.sampler.thresholds = Thresholds(ess_bulk_min=1e9)  # no batch fit can pass
    rows = analysis.analyse_batch(frames, [21, 22])
    settings = analysis.nutpie.settings
    assert settings.draws == NUTPIE_FALLBACK["draws_factor"] * plan.analysis.bayesian.draws
    assert settings.target_accept == NUTPIE_FALLBACK["target_accept"]
    assert nutpie_seed(21) != nutpie_seed(22)
    assert nutpie_seed(21) not in {
        int(child.generate_state(1)[0]) for child in np.random.SeedSequence(21).spawn(8)
    }
    for frame, seed, trial_rows in zip(frames, [21, 22], rows, strict=True):
        assert {row["sampler"] for row in trial_rows} == {"nutpie"}
        assert {row["status"] for row in trial_rows} == {"ok"}
        again = analysis.nutpie.fit(analysis.data_of(frame), seed=nutpie_seed(seed))
        assert again.passed
        draws = estimand_draws(again.idata["posterior"].to_dataset(), analysis.spec)
        for row in trial_rows:
            expected = float(endpoint_draws(draws, row["endpoint"]).mean())
            assert row["estimate"] == pytest.approx(expected, rel=1e-9), row["endpoint"]
