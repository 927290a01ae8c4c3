"""The sample-size method: exact on z-test curves, its statuses, and its validation study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from analysis import tab_sample_size_validation
from simulations.sample_size import (
    SAMPLE_SIZE_COLUMNS,
    crossing,
    estimate_sample_size,
    monotone_power,
    sample_size_table,
)
from simulations.sample_size_validation import (
    MAX_RELATIVE_ERROR,
    MIN_COVERAGE,
    RESULT_COLUMNS,
    TEST_CURVES,
    shipped_grids,
    validation_study,
)

GRID = np.array([8.0, 12, 16, 24, 32, 48])
Z = stats.norm.isf(0.025)


def z_power(n, delta):
    """Power of a one-sided z test at level 0.025: Phi(delta sqrt(n) - z)."""
    return stats.norm.cdf(delta * np.sqrt(np.asarray(n, dtype=float)) - Z)


def power_rows(power, reps: int = 400, grid=GRID) -> pd.DataFrame:
    """An alternative-scenario power table with the given power per grid n."""
    return pd.DataFrame(
        {
            "design": "cross_sectional",
            "scenario": "alternative",
            "endpoint": "e",
            "analysis": "mann_whitney",
            "n": grid,
            "power_all": np.rint(np.asarray(power) * reps) / reps,
            "n_reps": reps,
        }
    )


def test_crossing_is_exact_on_a_z_test_curve():
    delta = (Z + stats.norm.ppf(0.8)) / np.sqrt(19.3)  # 80% power at n = 19.3
    assert crossing(GRID, z_power(GRID, delta), 0.8, floor=1e-9) == pytest.approx(19.3)
    target_90 = ((Z + stats.norm.ppf(0.9)) / delta) ** 2
    assert crossing(GRID, z_power(GRID, delta), 0.9, floor=1e-9) == pytest.approx(target_90)


def test_power_exactly_at_the_target_on_the_last_grid_point_stays_inside_the_grid():
    """80 of 100 at n = 32, the last n: the crossing is 32 (rounding in the interpolation
    once put it a hair above, beyond the grid's last point)."""
    grid = np.array([6.0, 8, 12, 16, 24, 32])
    successes, trials = np.array([30, 42, 55, 63, 72, 80]), np.full(6, 100)
    estimate = estimate_sample_size(grid, successes, trials, 0.8)
    assert estimate["n_real"] == 32 and estimate["n_required"] == 32
    assert (estimate["n_below"], estimate["n_above"]) == (24, 32)


def test_monotone_power_pools_a_dip_by_its_weights():
    fitted = monotone_power([10, 30, 20, 50], [100, 100, 300, 100])
    pooled = (30 + 20) / 400
    assert fitted == pytest.approx([0.1, pooled, pooled, 0.5])


def test_estimate_reports_the_smallest_whole_n_and_a_covering_interval():
    delta = (Z + stats.norm.ppf(0.8)) / np.sqrt(19.3)
    trials = np.full(GRID.size, 100_000)
    successes = np.rint(z_power(GRID, delta) * trials)
    estimate = estimate_sample_size(GRID, successes, trials, 0.8)
    assert estimate["n_required"] == 20
    assert estimate["n_low"] <= 20 <= estimate["n_high"]
    assert estimate["n_high"] - estimate["n_low"] <= 2
    assert (estimate["n_below"], estimate["n_above"]) == (16, 24)


def test_sample_size_table_statuses_and_notes():
    delta = (Z + stats.norm.ppf(0.8)) / np.sqrt(19.3)
    ok = power_rows(z_power(GRID, delta))
    below = power_rows(np.full(GRID.size, 0.95)).assign(analysis="below")
    beyond = power_rows(np.linspace(0.1, 0.5, GRID.size)).assign(analysis="beyond")
    coarse_grid = np.array([8.0, 32])
    coarse = power_rows(z_power(coarse_grid, delta), grid=coarse_grid).assign(analysis="coarse")
    single = power_rows([0.5], grid=[16.0]).assign(analysis="single")
    sizes = sample_size_table(pd.concat([ok, below, beyond, coarse, single]), targets=(0.8,))
    assert list(sizes.columns) == SAMPLE_SIZE_COLUMNS
    rows = sizes.set_index("analysis")
    assert rows.loc["mann_whitney", "status"] == "ok"
    assert rows.loc["mann_whitney", "note"] == ""
    assert rows.loc["below", "status"] == "below_grid"
    assert rows.loc["below", "n_required"] == 8
    assert rows.loc["below", "n_high"] == 8  # even the lower bound is above 0.8 at n = 8
    assert np.isnan(rows.loc["below", "n_low"])
    assert rows.loc["below", "note"] == (
        "power at the smallest n simulated (8) already reaches 0.8: add smaller n to trial.n "
        "to find the smallest that suffices; interval reaches below the grid (n_low < 8)"
    )
    assert rows.loc["beyond", "status"] == "beyond_grid"
    assert np.isnan(rows.loc["beyond", "n_required"]) and np.isnan(rows.loc["beyond", "n_high"])
    assert rows.loc["beyond", "note"] == (
        "power at the largest n simulated (48) is below 0.8: add larger n to trial.n; "
        "interval reaches beyond the grid (n_high > 48)"
    )
    assert rows.loc["coarse", "status"] == "coarse_grid"
    assert rows.loc["coarse", "note"].startswith(
        "crossing between n=8 and n=32, further apart than the validated 1.5x"
    )
    assert rows.loc["single", "status"] == "not_estimable"
    assert rows.loc["single", "note"] == "fewer than 2 grid points"


def test_sample_size_counts_failures_as_non_successes():
    """The table reads power_all: failed analyses lower power and raise the n required."""
    delta = (Z + stats.norm.ppf(0.8)) / np.sqrt(19.3)
    clean = power_rows(z_power(GRID, delta), reps=4000)
    failing = clean.assign(power_all=clean["power_all"] * 0.9)
    n_clean = sample_size_table(clean, targets=(0.8,))["n_required"].iloc[0]
    n_failing = sample_size_table(failing, targets=(0.8,))["n_required"].iloc[0]
    assert n_failing > n_clean


def test_every_shipped_grid_steps_at_most_the_validated_ratio():
    for name, (grid, _) in shipped_grids().items():
        steps = np.asarray(grid[1:]) / np.asarray(grid[:-1])
        assert steps.max() <= 1.5, name


def assert_study_passes(results: pd.DataFrame, tolerance_mcse: float) -> None:
    """Coverage >= 93% everywhere and, on the real tests' curves, |relative error| <= 2%,
    within ``tolerance_mcse`` Monte Carlo SEs."""
    assert list(results.columns) == RESULT_COLUMNS
    low_cover = results["coverage"] + tolerance_mcse * results["coverage_mcse"] < MIN_COVERAGE
    error = results["relative_error"].abs() - tolerance_mcse * results["relative_error_mcse"]
    inaccurate = (error > MAX_RELATIVE_ERROR) & results["curve"].isin(TEST_CURVES)
    failing = results[low_cover | inaccurate]
    assert failing.empty, failing.to_string()


def test_reduced_validation_study_passes():
    results = validation_study(runs=150)
    assert set(results["plan"]) == set(shipped_grids())
    assert set(results["curve"]) == {"z_test", "t_test", "logistic_log_n"}
    assert set(results["m"]) == {100, 400}
    assert len(results) >= 180
    assert_study_passes(results, tolerance_mcse=3)


def test_validation_study_detects_a_grid_too_coarse():
    """The study can fail: on a doubling grid the flat stress curve is estimated >2% too high."""
    grids = {"doubling": ((4.0, 8.0, 16.0, 32.0, 64.0), (1000,))}
    results = validation_study(runs=300, grids=grids, curves=("logistic_log_n",))
    too_high = results["relative_error"] - 3 * results["relative_error_mcse"]
    assert (too_high > MAX_RELATIVE_ERROR).sum() >= 3


def test_validation_table_command(tmp_path):
    output = tmp_path / "sample_size_validation.csv"
    arguments = [str(output), "--runs", "40", "--curves", "z_test", "--replicates", "40"]
    result = CliRunner().invoke(tab_sample_size_validation.main, arguments)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(output)
    assert list(table.columns) == RESULT_COLUMNS and set(table["curve"]) == {"z_test"}
    assert set(table["m"]) == {40, 400}  # the pipeline's reduced count and the plans' own
    assert "scenarios pass" in result.output and "z_test, m = 40:" in result.output


@pytest.mark.validation
def test_full_validation_study_passes():
    """Full size (2000 runs per scenario, every shipped grid and curve): the criteria hold."""
    assert_study_passes(validation_study(runs=2000), tolerance_mcse=0)


@pytest.mark.parametrize(
    ("design", "allocation", "totals", "text"),
    [
        ("cross_sectional", 1.5, [25.0, 20.0, 37.0], "n = 10 [8, 15], 25 patients in all"),
        ("paired", 1.0, [10.0, 8.0, 15.0], "n = 10 [8, 15]"),
    ],
)
def test_sample_size_says_what_n_counts_and_the_designs_total(design, allocation, totals, text):
    from simulations.plan import Plan
    from simulations.power import sample_size_text, with_design_totals

    plan = Plan.model_validate(
        {
            "name": "t",
            "root_seed": 1,
            "trial": {
                "design": design,
                "n": [8, 12, 16],
                "allocation": allocation,
                "endpoints": ["ratio_fold_change_Th17_Treg"],
            },
        }
    )
    row = {"n_required": 10.0, "n_low": 8.0, "n_high": 15.0, "status": "ok"}
    sizes = with_design_totals(pd.DataFrame([row | {"n_min_grid": 8, "n_max_grid": 16}]), plan)
    assert sizes["n_counts"].tolist() == ["natalizumab-treated patients"]
    assert sizes[["total_required", "total_low", "total_high"]].iloc[0].tolist() == totals
    assert sample_size_text(next(sizes.itertuples())) == text
