"""Estimands are the stated arithmetic of pct_pos, draw by draw."""

import numpy as np
import pytest
import xarray as xr

from models.estimands import estimand_draws, estimand_table
from models.schema import GROUPS, CohortSpec

SUBSETS = ["Th1", "Th17", "Treg"]


def posterior_from(pct: np.ndarray) -> xr.Dataset:
    return xr.Dataset(
        {"pct_pos": (("chain", "draw", "group", "subset"), pct)},
        coords={
            "chain": [0, 1],
            "draw": np.arange(pct.shape[1]),
            "group": list(GROUPS),
            "subset": SUBSETS,
        },
    )


def test_derived_estimands_follow_their_definitions():
    rng = np.random.default_rng(0)
    pct = rng.uniform(0.05, 0.9, size=(2, 50, 4, 3))
    draws = estimand_draws(posterior_from(pct), CohortSpec())
    naive, treated = pct[:, :, 1], pct[:, :, 2]
    reduction = 1 - treated / naive
    np.testing.assert_allclose(draws["pct_pos"].values, 100 * pct)
    np.testing.assert_allclose(draws["reduction"].values, reduction)
    fold = (treated[..., :2] / treated[..., 2:]) / (naive[..., :2] / naive[..., 2:])
    np.testing.assert_allclose(
        draws["ratio_fold_change"].transpose("chain", "draw", "subset").values, fold
    )
    np.testing.assert_allclose(
        draws["differential_reduction"].transpose("chain", "draw", "subset").values,
        reduction[..., 2:] - reduction[..., :2],
    )


def test_summary_row_matches_numpy():
    rng = np.random.default_rng(1)
    pct = rng.uniform(0.05, 0.9, size=(2, 400, 4, 3))
    table = estimand_table(posterior_from(pct), CohortSpec())
    row = table[
        (table["estimand"] == "pct_pos") & (table["group"] == "HC") & (table["subset"] == "Treg")
    ].iloc[0]
    values = 100 * pct[:, :, 0, 2].ravel()
    assert row["mean"] == pytest.approx(values.mean())
    assert row["q2.5"] == pytest.approx(np.quantile(values, 0.025))
    assert row["prob_positive"] == 1.0
