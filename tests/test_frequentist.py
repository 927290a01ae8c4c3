"""frequentist.csv: every p-value and descriptive recomputed with scipy/pandas from the files."""

from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.frequentist import mann_whitney, min_attainable_p
from tests.conftest import BUNDLED_COHORT

GROUPS = ["HC", "MS_naive", "MS_NTZ", "NMOSD"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> pd.DataFrame:
    from click.testing import CliRunner

    from analysis.cli import main

    out = tmp_path_factory.mktemp("describe")
    result = CliRunner().invoke(main, ["describe", str(BUNDLED_COHORT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "provenance.json").exists()
    return pd.read_csv(out / "frequentist.csv")


@pytest.fixture(scope="module")
def values() -> dict[tuple[str, str], pd.DataFrame]:
    """Per-subject values of each quantity, computed independently from the cohort file."""
    table = pd.read_csv(BUNDLED_COHORT)
    table["pct"] = 100 * table["n_cd49d_pos"] / table["n_cells"]
    wide = table.pivot(index="subject_id", columns="subset", values="pct")
    subjects = table.drop_duplicates("subject_id").set_index("subject_id")
    found = {}
    for subset in ("Th1", "Th17", "Treg"):
        found[("pct_cd49d_pos", subset)] = wide[subset]
    for subset in ("Th1", "Th17"):
        found[("cd49d_ratio", f"{subset}/Treg")] = wide[subset] / wide["Treg"]
    return {
        key: pd.DataFrame(
            {"value": v, "group": subjects["group"], "exacerbation": subjects["exacerbation"]}
        )
        for key, v in found.items()
    }


def test_descriptives_match_pandas(written, values):
    rows = written[written["analysis"] == "descriptive"]
    assert len(rows) == 5 * 4
    for row in rows.itertuples():
        data = values[(row.quantity, row.subset)]
        sample = data.loc[data["group"] == row.group, "value"]
        assert row.n == len(sample)
        assert row.median == pytest.approx(sample.median(), rel=1e-12)
        assert (row.q25, row.q75) == pytest.approx(
            (np.percentile(sample, 25), np.percentile(sample, 75)), rel=1e-12
        )


def test_kruskal_wallis_matches_scipy(written, values):
    rows = written[written["analysis"] == "kruskal_wallis"]
    assert len(rows) == 5
    for row in rows.itertuples():
        data = values[(row.quantity, row.subset)]
        expected = stats.kruskal(*[data.loc[data["group"] == g, "value"] for g in GROUPS])
        assert row.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert row.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_treated_vs_naive_matches_scipy(written, values):
    rows = written[written["analysis"] == "mann_whitney"]
    assert len(rows) == 5
    for row in rows.itertuples():
        data = values[(row.quantity, row.subset)]
        expected = stats.mannwhitneyu(
            data.loc[data["group"] == "MS_NTZ", "value"],
            data.loc[data["group"] == "MS_naive", "value"],
            alternative="two-sided",
            method="exact",
        )
        assert row.method == "exact"
        assert row.statistic == expected.statistic
        assert row.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_exacerbation_comparison_is_exact_with_its_floor(written, values):
    rows = written[written["analysis"] == "exacerbation"]
    assert len(rows) == 5
    for row in rows.itertuples():
        data = values[(row.quantity, row.subset)]
        treated = data[data["group"] == "MS_NTZ"]
        expected = stats.mannwhitneyu(
            treated.loc[treated["exacerbation"] == 1, "value"],
            treated.loc[treated["exacerbation"] == 0, "value"],
            alternative="two-sided",
            method="exact",
        )
        assert (row.n, row.n_other) == (2, 6)
        assert row.p_value == pytest.approx(expected.pvalue, rel=1e-12)
        assert row.min_attainable_p == pytest.approx(2 / comb(8, 2))
        assert row.p_value >= row.min_attainable_p - 1e-12


def test_ties_use_an_exact_permutation_test():
    x, y = np.array([5.0, 5.0, 6.0]), np.array([5.0, 2.0, 3.0, 1.0])
    u, p, method = mann_whitney(x, y)
    expected = stats.mannwhitneyu(x, y, method=stats.PermutationMethod(n_resamples=np.inf))
    assert method == "exact permutation (ties)"
    assert (u, p) == pytest.approx((expected.statistic, expected.pvalue))


def test_min_attainable_p():
    assert min_attainable_p(2, 6) == pytest.approx(0.0714285714)
    assert min_attainable_p(1, 1) == 1.0
