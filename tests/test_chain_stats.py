"""The vectorised gate statistics give ArviZ's R-hat, bulk ESS and tail ESS on the same draws."""

import numpy as np
import pytest
from arviz_stats.base import array_stats

from models.chain_stats import gate_statistics


def autoregressive(phi: float, shape: tuple, rng) -> np.ndarray:
    noise = rng.normal(size=shape)
    draws = np.zeros(shape)
    for t in range(1, shape[-1]):
        draws[..., t] = phi * draws[..., t - 1] + noise[..., t]
    return draws


def arviz_statistics(draws: np.ndarray):
    kwargs = {"chain_axis": -2, "draw_axis": -1}
    return (
        array_stats.rhat(draws, **kwargs),
        array_stats.ess(draws, method="bulk", **kwargs),
        array_stats.ess(draws, method="tail", prob=(0.05, 0.95), **kwargs),
    )


@pytest.mark.parametrize(
    "kind", ["independent", "autocorrelated", "antithetic", "ties", "odd_draws", "chains_apart"]
)
def test_agrees_with_arviz(kind):
    rng = np.random.default_rng(7)
    draws = {
        "independent": lambda: rng.normal(size=(20, 4, 400)),
        "autocorrelated": lambda: autoregressive(0.9, (20, 4, 400), rng),
        "antithetic": lambda: autoregressive(-0.4, (20, 4, 400), rng),
        "ties": lambda: np.round(rng.normal(size=(20, 4, 400)), 1),  # rejections repeat draws
        "odd_draws": lambda: rng.normal(size=(20, 3, 301)),
        "chains_apart": lambda: rng.normal(size=(20, 4, 400)) + np.arange(4)[:, None] * 0.5,
    }[kind]()
    ours = gate_statistics(draws)
    theirs = arviz_statistics(draws)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-10)


def test_distances_that_tie_only_at_numpys_median():
    """Two draws equally far from numpy's median, ``(a + b) / 2``, are not equally far from
    ``a + (b - a) / 2``, one bit away: the folded ranks must tie as ArviZ's do."""
    a, b, d = -1.2826492440738984, 1.643251614242697, 3.5115586581579543
    median = (a + b) / 2
    values = np.array([median - d, median - d - 1, a, median + d + 1, b, median + d])
    draws = np.concatenate([values, [median - d - 2, median + d + 2]]).reshape(1, 2, 4)
    for mine, reference in zip(gate_statistics(draws), arviz_statistics(draws), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-12)


def test_an_increasing_function_shares_its_sources_ranks():
    """Bulk R-hat, bulk and tail ESS of ``invlogit(x)`` are taken from ``x``, its folded R-hat
    is its own: all equal ArviZ's on its draws. A source must be its own source."""
    rng = np.random.default_rng(3)
    spread = np.array([1.0, 1.0, 1.0, 1.8])[:, None]  # one chain wider: the folded R-hat
    source = autoregressive(0.6, (5, 4, 300), rng) * spread + 0.5
    draws = np.concatenate([source, 1 / (1 + np.exp(-2 * source)), np.exp(source)])
    same_ranks_as = np.concatenate([np.arange(5), np.arange(5), np.arange(5)])
    ours = gate_statistics(draws, same_ranks_as)
    for mine, reference in zip(ours, arviz_statistics(draws), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-10)
    folded_differs = ours[0][5:10] != ours[0][:5]
    assert folded_differs.any()  # the folded half is not simply copied
    with pytest.raises(ValueError, match="one that is its own source"):
        gate_statistics(draws, np.concatenate([np.arange(5), np.arange(5) + 10, np.arange(5)]))


def test_constant_and_missing_quantities():
    draws = np.random.default_rng(1).normal(size=(3, 4, 100))
    draws[0] = 2.5  # a constant deterministic
    draws[1, 2, 7] = np.nan
    rhat, ess_bulk, ess_tail = gate_statistics(draws)
    assert np.isnan(rhat[0]) and ess_bulk[0] == ess_tail[0] == 400  # as ArviZ
    assert np.isnan(rhat[1]) and np.isnan(ess_bulk[1]) and np.isnan(ess_tail[1])
    assert np.isfinite([rhat[2], ess_bulk[2], ess_tail[2]]).all()


def test_missing_draw_that_the_split_leaves_out():
    draws = np.random.default_rng(2).normal(size=(2, 4, 101))
    draws[0, 1, 50] = np.nan  # the middle draw of an odd chain: in no split half
    rhat, ess_bulk, ess_tail = gate_statistics(draws)
    assert np.isnan([rhat[0], ess_bulk[0], ess_tail[0]]).all()
    assert np.isfinite([rhat[1], ess_bulk[1], ess_tail[1]]).all()


def test_too_few_draws_are_refused():
    with pytest.raises(ValueError, match="at least 2 chains of 4 draws"):
        gate_statistics(np.zeros((1, 1, 10)))
