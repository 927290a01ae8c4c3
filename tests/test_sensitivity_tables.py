"""The sensitivity tables speak identification.csv's language, and a quantity a prior set fixes
is reported as fixed, not as a shift."""

import numpy as np
import pandas as pd
import pytest

from models.sensitivity import prior_refit_table, scaling_verdict


@pytest.mark.parametrize(
    ("prior", "likelihood", "verdict"),
    [
        (0.004, 0.074, "data"),  # ArviZ: ok
        (0.114, 0.110, "data and prior"),  # ArviZ: potential prior-data conflict
        (0.155, 0.029, "prior"),  # ArviZ: potential strong prior / weak likelihood
    ],
)
def test_power_scaling_verdicts_use_the_identification_vocabulary(prior, likelihood, verdict):
    assert scaling_verdict(prior, likelihood) == verdict


def test_a_quantity_the_alternative_prior_fixes_has_no_shift():
    keys = {"estimand": ["saturation_mean", "kappa"], "group": ["", ""], "subset": ["", ""]}
    units = {"unit": ["fraction of receptors", "fraction per unit occupancy"]}
    default = pd.DataFrame(
        {**keys, **units, "mean": [0.87, 0.70], "sd": [0.05, 0.13], "q2.5": 0.0, "q97.5": 1.0}
    )
    uniform = default.assign(mean=[0.8, 0.66], sd=[1.1e-16, 0.12])
    table = prior_refit_table(default, uniform, alternative_name="uniform_saturation")
    fixed, kappa = table.iloc[0], table.iloc[1]
    assert np.isnan(fixed["shift_in_sd"])
    assert (
        fixed["note"] == "fixed at 0.8 by the uniform_saturation prior set, not estimated: no shift"
    )
    assert kappa["shift_in_sd"] == pytest.approx((0.66 - 0.70) / 0.13)
    assert kappa["note"] == ""
