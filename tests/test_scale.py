"""Every model passes the diagnostics gate at default settings on cohorts larger than the study.

Independent cohorts simulated from the package's joint model with the bundled configuration's
parameters, at 4x the study's design (200 subjects, 32 treated; here) and 10x (``make validate``).
"""

from dataclasses import replace

import pytest

from models.data import Cohort
from models.fit import SamplerSettings, fit_gated
from models.names import MODEL_NAMES
from models.registry import MODELS
from simulations.cohort import load_config, simulate_cohort


def scaled_cohort(scale: int) -> Cohort:
    config = load_config()
    sizes = {group: n * scale for group, n in config.group_sizes.items()}
    config = replace(config, group_sizes=sizes, exacerbations=2 * scale, candidate_draws=5000)
    return Cohort.from_frame(simulate_cohort(config, seed=101), config.spec, source=f"{scale}x")


@pytest.fixture(scope="module")
def four_times():
    return scaled_cohort(4)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_passes_the_gate_at_four_times_the_study(four_times, name):
    result = fit_gated(
        lambda: MODELS[name].build(four_times), SamplerSettings(), seed=1, with_checks=False
    )
    assert result.passed, result.report.describe()


@pytest.mark.validation
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_passes_the_gate_at_ten_times_the_study(name):
    cohort = scaled_cohort(10)
    result = fit_gated(
        lambda: MODELS[name].build(cohort), SamplerSettings(), seed=1, with_checks=False
    )
    assert result.passed, result.report.describe()
