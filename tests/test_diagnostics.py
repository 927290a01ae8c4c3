"""The diagnostics gate: exact on constructed draws, and it trips on a pathological model."""

import numpy as np
import pymc as pm
import pytest
import xarray as xr

from models.diagnostics import Thresholds, check
from models.fit import SamplerSettings, sample_posterior


def tree(posterior: dict, diverging=None, energy=None, seed=0) -> xr.DataTree:
    rng = np.random.default_rng(seed)
    chains, draws = next(iter(posterior.values())).shape[:2]
    stats = {
        "diverging": (
            ("chain", "draw"),
            np.zeros((chains, draws), bool) if diverging is None else diverging,
        ),
        "energy": (
            ("chain", "draw"),
            rng.normal(size=(chains, draws)) if energy is None else energy,
        ),
    }
    return xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({k: (("chain", "draw"), v) for k, v in posterior.items()}),
            "sample_stats": xr.Dataset(stats),
        }
    )


def test_well_mixed_independent_draws_pass():
    rng = np.random.default_rng(1)
    report = check(tree({"a": rng.normal(size=(4, 1000))}))
    assert report.passed and report.failures == []


def test_chains_in_different_places_fail_rhat():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(4, 1000)) + np.array([0, 0, 0, 3])[:, None]
    report = check(tree({"a": draws}))
    assert not report.passed
    assert report.failures[0].startswith("R-hat > 1.01 for 1 parameter(s): a (")


def test_divergences_fail_and_are_counted():
    rng = np.random.default_rng(3)
    diverging = np.zeros((4, 1000), bool)
    diverging[0, :3] = True
    report = check(tree({"a": rng.normal(size=(4, 1000))}, diverging=diverging))
    assert report.failures == ["3 divergent transitions (allowed 0)"]


def test_low_ebfmi_fails():
    rng = np.random.default_rng(4)
    energy = np.cumsum(rng.normal(size=(4, 1000)), axis=1)  # a random walk: energy barely moves
    report = check(tree({"a": rng.normal(size=(4, 1000))}, energy=energy))
    assert any(f.startswith("E-BFMI") for f in report.failures)


def test_constant_quantities_are_not_judged():
    rng = np.random.default_rng(5)
    report = check(tree({"a": rng.normal(size=(4, 1000)), "fixed": np.full((4, 1000), 0.8)}))
    assert report.passed


def test_thresholds_are_configurable():
    rng = np.random.default_rng(6)
    draws = np.cumsum(rng.normal(size=(4, 300)), axis=1) * 0.05 + rng.normal(size=(4, 300))
    strict = check(tree({"a": draws}))
    lenient = check(tree({"a": draws}), Thresholds(ess_bulk_min=10, ess_tail_min=10, rhat_max=1.5))
    assert not strict.passed and lenient.passed


@pytest.mark.slow
def test_gate_trips_on_a_centred_funnel():
    """A centred hierarchical model with few groups and weak data: divergences or poor mixing."""
    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    with pm.Model() as centred:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta = pm.Normal("theta", mu, tau, shape=8)
        pm.Normal("y", theta, sigma, observed=y)
    idata = sample_posterior(
        centred,
        SamplerSettings(sampler="pymc", draws=500, tune=500, chains=4, target_accept=0.8),
        seed=7,
    )
    report = check(idata)
    assert not report.passed
    assert any("divergent" in f or "ESS" in f or "R-hat" in f for f in report.failures)
