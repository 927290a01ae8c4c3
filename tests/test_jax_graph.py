"""The compound-symmetric subject vector and the JAX compilation of the models' own graphs."""

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
from scipy import stats

from models.data import load_cohort
from models.effects import compound_symmetric_draw, compound_symmetric_logp
from models.jax_graph import compile_to_jax, rank_sources
from models.registry import MODELS
from tests.conftest import BUNDLED_COHORT


def compound_symmetric_covariance(k: int, tau_shared: float, tau_own: float) -> np.ndarray:
    return tau_own**2 * np.eye(k) + tau_shared**2 * np.ones((k, k))


def test_compound_symmetric_logp_is_the_multivariate_normal():
    rng = np.random.default_rng(0)
    mu, value = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    tau_shared, tau_own = 0.7, 0.3
    logp = compound_symmetric_logp(pt.as_tensor(value), pt.as_tensor(mu), tau_shared, tau_own)
    covariance = compound_symmetric_covariance(3, tau_shared, tau_own)
    expected = [
        stats.multivariate_normal(m, covariance).logpdf(v) for m, v in zip(mu, value, strict=True)
    ]
    np.testing.assert_allclose(logp.eval(), expected, rtol=1e-12)


def test_compound_symmetric_draws_have_that_covariance():
    mu = pt.as_tensor(np.zeros((20_000, 3)))
    draws = pm.draw(compound_symmetric_draw(mu, 0.7, 0.3, None), random_seed=1)
    expected = compound_symmetric_covariance(3, 0.7, 0.3)
    np.testing.assert_allclose(np.cov(draws.T), expected, atol=0.02)  # MC error ~0.005


@pytest.mark.parametrize("name", ["positive_rate", "saturation", "exacerbation"])
def test_jax_log_density_is_the_models(name):
    """Equal to PyMC's compiled log density up to a constant (the binomial coefficients are
    computed with different gamma-function code), with equal gradients, at random points."""
    model = MODELS[name].build(load_cohort(BUNDLED_COHORT))
    data_names = tuple(v.name for v in model.data_vars)
    jax_model = compile_to_jax(model, data_names)
    data = tuple(jnp.asarray(model[n].get_value()) for n in data_names)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    rng = np.random.default_rng(3)
    differences = []
    for _ in range(3):
        position = jax_model.initial_position + rng.normal(0, 0.3, jax_model.dimension)
        point, start = {}, 0
        for value_name, shape in zip(jax_model.value_names, jax_model.value_shapes, strict=True):
            size = int(np.prod(shape))
            point[value_name] = position[start : start + size].reshape(shape)
            start += size
        here = jnp.asarray(position)
        differences.append(logp(point) - float(jax_model.logdensity(here, data)))
        gradient = np.asarray(jax.grad(jax_model.logdensity)(here, data))
        np.testing.assert_allclose(gradient, dlogp(point), rtol=1e-8, atol=1e-8)
    assert np.ptp(differences) < 1e-6
    assert abs(differences[0]) < 0.01


def test_unknown_data_are_refused():
    model = MODELS["positive_rate"].build(load_cohort(BUNDLED_COHORT))
    with pytest.raises(KeyError, match="not data of the model: n_events"):
        compile_to_jax(model, ("n_events",))


def test_increasing_functions_of_another_quantity_are_found_in_the_graph():
    """``rank_sources``: what shares its ranks with another quantity (so the gate computes its
    rank statistics once), and what does not."""
    with pm.Model() as model:
        x = pm.Normal("x", size=3)
        pm.Deterministic("logistic", 2 * pm.math.invlogit(x) + 1)
        pm.Deterministic("normal_cdf", pm.math.invprobit(x))
        pm.Deterministic("of_a_deterministic", pt.exp(model["logistic"]) / 4)
        pm.Deterministic("decreasing", 1 - pt.exp(x))
        pm.Deterministic("mixed_signs", x * np.array([1.0, -1.0, 2.0]))
        pm.Deterministic("square", x**2)
        pm.Deterministic("reordered", x[::-1] + 1)
    assert rank_sources(model) == {
        "logistic": "x",
        "normal_cdf": "x",
        "of_a_deterministic": "x",
    }
    for name in ("positive_rate", "saturation"):
        built = MODELS[name].build(load_cohort(BUNDLED_COHORT))
        assert rank_sources(built)["positive_rate_subject"] in ("subject_logit", "subject_probit")
