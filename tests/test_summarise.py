"""Summaries of simulated trial records: Wilson intervals, power tables, the figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from analysis import fig_power_curve
from simulations.sample_size import sample_size_table
from simulations.summarise import (
    PERFORMANCE_COLUMNS,
    POWER_COLUMNS,
    TYPE_I_COLUMNS,
    performance_table,
    power_table,
    type_i_table,
    wilson_interval,
)

GRID = np.array([10, 15, 20, 30, 45, 70])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAYES_NULL = {"scenario": "null", "analysis": "bayes_rope", "nominal_level": np.nan}


def record(n, replicate, *, success, status="ok", **overrides) -> dict:
    """One replicate record with engine-like columns; keyword overrides change any of them."""
    row = {
        "plan_hash": "abc123",
        "design": "paired",
        "scenario": "alternative",
        "cell_id": f"paired-alt-{n}",
        "n": n,
        "replicate": replicate,
        "seed_data": 1000 + replicate,
        "seed_analysis": 2000 + replicate,
        "endpoint": "ratio_fold_change_Th17_Treg",
        "analysis": "wilcoxon",
        "nominal_level": 0.05,
        "estimate": 0.1,
        "p_value": 0.01 if success else 0.5,
        "posterior_prob": np.nan,
        "success": success,
        "status": status,
        "error_type": "" if status == "ok" else "FloatingPointError",
        "error_message": "" if status == "ok" else "overflow",
        "seconds": 0.01,
    }
    return {**row, **overrides}


def probit_records(intercept, slope, *, grid=GRID, reps=4000, seed=0, **overrides):
    """Records whose successes follow power(n) = Phi(intercept + slope log n), all status ok."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in grid:
        successes = rng.binomial(reps, stats.norm.cdf(intercept + slope * np.log(n)))
        rows += [record(int(n), r, success=r < successes, **overrides) for r in range(reps)]
    return pd.DataFrame(rows)


def intercept_for(n_at_80: float, slope: float) -> float:
    """The probit intercept that puts 80% power at ``n_at_80`` for this slope."""
    return stats.norm.ppf(0.8) - slope * np.log(n_at_80)


@pytest.fixture
def small_records() -> pd.DataFrame:
    """Hand-built records with known counts, failures included."""
    rows = [
        # n = 10: 2 successes, 1 ok failure, 1 error, 1 not converged (one error flagged success).
        record(10, 0, success=True),
        record(10, 1, success=True),
        record(10, 2, success=False),
        record(10, 3, success=True, status="error"),
        record(10, 4, success=False, status="not_converged"),
        # n = 20: all 4 succeed.
        *(record(20, r, success=True) for r in range(4)),
        # n = 20, all failed: power undefined, power_all 0.
        *(record(20, r, success=False, status="error", analysis="mann_whitney") for r in range(3)),
        # null scenario, Bayesian rule with no nominal level: 1 of 4 rejects.
        *(record(10, r, success=r == 0, **BAYES_NULL) for r in range(4)),
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_wilson_interval_matches_statsmodels(level):
    successes = np.array([0, 1, 3, 10, 0, 57, 399, 400])
    trials = np.array([10, 10, 10, 10, 1, 400, 400, 400])
    low, high = wilson_interval(successes, trials, level=level)
    expected_low, expected_high = proportion_confint(
        successes, trials, alpha=1 - level, method="wilson"
    )
    np.testing.assert_allclose(low, expected_low, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(high, expected_high, rtol=1e-12, atol=1e-15)
    for k, m in zip(successes, trials, strict=True):
        scalar = wilson_interval(int(k), int(m), level=level)
        assert scalar == pytest.approx(
            proportion_confint(int(k), int(m), alpha=1 - level, method="wilson"), abs=1e-14
        )


def test_wilson_interval_is_nan_without_trials():
    low, high = wilson_interval(np.array([0, 2]), np.array([0, 4]))
    assert np.isnan(low[0]) and np.isnan(high[0])
    assert 0 < low[1] < 0.5 < high[1] < 1


def test_power_table_counts_failures_both_ways(small_records):
    before = small_records.copy(deep=True)
    table = power_table(small_records)
    pd.testing.assert_frame_equal(small_records, before)
    assert list(table.columns) == POWER_COLUMNS
    keys = ["design", "scenario", "endpoint", "analysis", "n"]
    assert table[keys].equals(table[keys].sort_values(keys).reset_index(drop=True))

    row = table.set_index(["scenario", "analysis", "n"]).loc[("alternative", "wilcoxon", 10)]
    assert (row["n_reps"], row["n_failed"]) == (5, 2)
    assert row["power"] == pytest.approx(2 / 3)
    assert row["power_all"] == pytest.approx(2 / 5)
    assert row["mcse"] == pytest.approx(math.sqrt((2 / 3) * (1 / 3) / 3))
    assert row["mcse_all"] == pytest.approx(math.sqrt(0.4 * 0.6 / 5))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(2, 3))
    assert (row["ci_low_all"], row["ci_high_all"]) == pytest.approx(wilson_interval(2, 5))
    assert row["nominal_level"] == 0.05


def test_power_table_edge_groups(small_records):
    table = power_table(small_records).set_index(["scenario", "analysis", "n"])
    perfect = table.loc[("alternative", "wilcoxon", 20)]
    assert (perfect["power"], perfect["n_failed"]) == (1.0, 0)
    assert np.isnan(perfect["mcse"])  # never shown as 0: the Wilson interval instead
    low, high = wilson_interval(perfect["n_reps"], perfect["n_reps"])
    assert perfect["note"] == (
        f"no MCSE at 0 or 1: power = 1 (4 of 4; Wilson 95% [{low:.3f}, {high:.3f}]); "
        f"power_all = 1 (4 of 4; Wilson 95% [{low:.3f}, {high:.3f}])"
    )
    all_failed = table.loc[("alternative", "mann_whitney", 20)]
    assert np.isnan(all_failed["power"]) and np.isnan(all_failed["ci_low"])
    assert (all_failed["power_all"], all_failed["n_failed"], all_failed["n_reps"]) == (0.0, 3, 3)
    assert np.isnan(table.loc[("null", "bayes_rope", 10), "nominal_level"])


def test_power_table_refuses_duplicated_replicates(small_records):
    doubled = pd.concat([small_records, small_records.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicated replicate"):
        power_table(doubled)


def test_power_table_refuses_mixed_nominal_levels(small_records):
    mixed = small_records.copy()
    mixed.loc[0, "nominal_level"] = 0.025
    with pytest.raises(ValueError, match="nominal_level varies"):
        power_table(mixed)


def test_type_i_table_checks_against_nominal_level():
    calibrated = probit_records(stats.norm.ppf(0.05), 0.0, grid=[20], reps=2000, scenario="null")
    liberal = probit_records(
        stats.norm.ppf(0.15), 0.0, grid=[20], reps=2000, scenario="null", analysis="mann_whitney"
    )
    bayes = probit_records(
        stats.norm.ppf(0.05),
        0.0,
        grid=[20],
        reps=200,
        scenario="null",
        analysis="bayes_rope",
        nominal_level=np.nan,
    )
    alternative = probit_records(0.0, 0.5, grid=[20], reps=50)
    power = power_table(pd.concat([calibrated, liberal, bayes, alternative], ignore_index=True))
    table = type_i_table(power).set_index("analysis")
    assert list(type_i_table(power).columns) == TYPE_I_COLUMNS
    assert len(table) == 3  # the alternative-scenario row is left out
    assert table.loc["wilcoxon", "within_3_mcse"]
    assert not table.loc["mann_whitney", "within_3_mcse"]
    assert pd.isna(table.loc["bayes_rope", "within_3_mcse"])
    assert table.loc["mann_whitney", "rejection_rate"] == pytest.approx(0.15, abs=0.03)
    # two rows have a verdict: Bonferroni over 2 at 5%, the same quantile in every row
    assert table["familywise_mcse"].to_numpy() == pytest.approx([stats.norm.isf(0.05 / 4)] * 3)
    assert table.loc["wilcoxon", "within_familywise"]
    assert not table.loc["mann_whitney", "within_familywise"]
    assert pd.isna(table.loc["bayes_rope", "within_familywise"])


def test_the_familywise_tolerance_flags_few_cells_of_a_calibrated_run():
    """Many exactly calibrated cells: 3 MCSE flags some by chance, the family-wise one rarely."""
    rng = np.random.default_rng(4)
    cells, reps = 400, 400
    rejections = rng.binomial(reps, 0.025, size=cells)
    power = pd.DataFrame(
        {
            "design": "paired",
            "scenario": "null",
            "endpoint": "e",
            "analysis": [f"a{i}" for i in range(cells)],
            "n": 8,
            "power": rejections / reps,
            "mcse": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "n_reps": reps,
            "n_failed": 0,
            "nominal_level": 0.025,
            "note": "",
        }
    )
    table = type_i_table(power)
    assert (~table["within_3_mcse"].astype(bool)).sum() >= 1
    assert table["within_familywise"].astype(bool).all()


def figure_inputs(tmp_path):
    """Power and sample-size CSVs for two panels: recoverable, extrapolated, not estimable."""
    slope = 1.5
    records = pd.concat(
        [
            probit_records(intercept_for(30.0, slope), slope, reps=300, seed=1),
            probit_records(
                intercept_for(120.0, slope), slope, reps=300, seed=2, analysis="mann_whitney"
            ),
            probit_records(0.0, 0.0, reps=300, seed=4, analysis="bayes_direction"),
            probit_records(
                intercept_for(25.0, 1.0), 1.0, reps=300, seed=3, endpoint="exacerbation_log_or"
            ),
        ],
        ignore_index=True,
    )
    power = power_table(records)
    power_csv, sample_size_csv = tmp_path / "power.csv", tmp_path / "sample_size.csv"
    power.to_csv(power_csv, index=False)
    sample_size_table(power).to_csv(sample_size_csv, index=False)
    return power_csv, sample_size_csv


def test_figure_writes_png(tmp_path):
    power_csv, sample_size_csv = figure_inputs(tmp_path)
    output = tmp_path / "figures" / "power_curve.png"
    fig_power_curve.make(power_csv, sample_size_csv, output)
    content = output.read_bytes()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 10_000


def test_figure_command_line(tmp_path):
    power_csv, sample_size_csv = figure_inputs(tmp_path)
    output = tmp_path / "power_curve.pdf"
    result = CliRunner().invoke(
        fig_power_curve.main, [str(power_csv), str(sample_size_csv), str(output)]
    )
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(b"%PDF")


def test_figure_refuses_power_table_without_alternative(tmp_path):
    power_csv, sample_size_csv = figure_inputs(tmp_path)
    null_only = pd.read_csv(power_csv).assign(scenario="null")
    null_only.to_csv(power_csv, index=False)
    with pytest.raises(ValueError, match="alternative"):
        fig_power_curve.make(power_csv, sample_size_csv, tmp_path / "x.png")


def estimate_records(estimates, errors, **overrides) -> pd.DataFrame:
    """Records of one cell whose analysis reports ``estimates`` with SEs and 95% Wald CIs."""
    rows = []
    overrides = {"analysis": "mixed_model", **overrides}
    for replicate, (estimate, error) in enumerate(zip(estimates, errors, strict=True)):
        row = record(20, replicate, success=True, **overrides)
        half = 1.959963984540054 * error
        row.update(
            estimate=estimate, std_error=error, ci_low=estimate - half, ci_high=estimate + half
        )
        rows.append(row)
    return pd.DataFrame(rows)


def truth_table(value: float, family: str = "frequentist") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "scenario": "alternative",
                "endpoint": "ratio_fold_change_Th17_Treg",
                "family": family,
                "true_value": value,
                "true_value_of": "log population-average ratio fold change",
            }
        ]
    )


def test_performance_measures_and_their_mcse_follow_morris_et_al():
    rng = np.random.default_rng(8)
    estimates = 0.3 + 0.05 + rng.normal(0, 0.2, 4000)  # bias 0.05, empirical SE 0.2
    errors = np.abs(rng.normal(0.2, 0.02, 4000))
    row = performance_table(estimate_records(estimates, errors), truth_table(0.3)).iloc[0]
    assert (
        list(performance_table(estimate_records(estimates, errors), truth_table(0.3)).columns)
        == PERFORMANCE_COLUMNS
    )
    k = 4000
    assert row["bias"] == pytest.approx(estimates.mean() - 0.3)
    assert row["bias"] == pytest.approx(0.05, abs=3 * row["bias_mcse"])
    assert row["bias_mcse"] == pytest.approx(estimates.std(ddof=1) / np.sqrt(k))
    assert row["empirical_se"] == pytest.approx(estimates.std(ddof=1))
    assert row["empirical_se_mcse"] == pytest.approx(estimates.std(ddof=1) / np.sqrt(2 * (k - 1)))
    model_se = np.sqrt(np.mean(errors**2))
    assert row["model_se"] == pytest.approx(model_se)
    assert row["model_se_mcse"] == pytest.approx(
        np.sqrt(np.var(errors**2, ddof=1) / (4 * k * model_se**2))
    )
    covered = np.abs(estimates - 0.3) <= 1.959963984540054 * errors
    assert row["coverage"] == pytest.approx(covered.mean())
    assert row["coverage_mcse"] == pytest.approx(np.sqrt(covered.mean() * (1 - covered.mean()) / k))
    assert row["estimate_of"].startswith("subset x natalizumab interaction")
    assert row["note"] == ""


def test_performance_counts_bayes_rules_once_and_notes_failures_and_full_coverage():
    bayes = pd.concat(
        [
            estimate_records([0.3, 0.31, 0.29], [0.05] * 3, analysis=rule)
            for rule in ("bayes_direction", "bayes_rope")
        ],
        ignore_index=True,
    )
    failed = estimate_records(
        [np.nan], [np.nan], analysis="bayes_direction", status="not_converged"
    )
    failed["replicate"] = 3
    table = performance_table(
        pd.concat([bayes, failed], ignore_index=True), truth_table(0.3, "bayes")
    )
    assert len(table) == 1
    row = table.iloc[0]
    assert row["analysis"] == "bayes" and row["n_reps"] == 4 and row["n_estimates"] == 3
    assert row["coverage"] == 1 and np.isnan(row["coverage_mcse"])
    low, high = wilson_interval(3, 3)
    assert row["note"] == (
        f"coverage 3/3: Wilson 95% [{low:.3f}, {high:.3f}]; 1 of 4 analyses failed: left out"
    )
