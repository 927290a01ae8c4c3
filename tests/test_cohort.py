"""The bundled simulated cohort: exact design, byte-for-byte regeneration, the study's findings."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from simulations.cohort import DEFAULT_CONFIG, PARAMETERS, CohortConfig, ConfigError, load_config
from tests.conftest import BUNDLED_COHORT


@pytest.fixture(scope="module")
def cohort_table() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_COHORT)


@pytest.fixture(scope="module")
def subject_rates(cohort_table) -> pd.DataFrame:
    """Rates and ratios per subject, computed here independently of the package."""
    table = cohort_table.assign(rate=cohort_table["n_cd49d_pos"] / cohort_table["n_cells"])
    wide = table.pivot(index="subject_id", columns="subset", values="rate")
    subjects = table.drop_duplicates("subject_id").set_index("subject_id")
    wide["group"] = subjects["group"]
    wide["exacerbation"] = subjects["exacerbation"]
    wide["Th1/Treg"] = wide["Th1"] / wide["Treg"]
    wide["Th17/Treg"] = wide["Th17"] / wide["Treg"]
    return wide


def test_regenerates_byte_for_byte(run_cli, tmp_path):
    out = tmp_path / "cohort.csv"
    result = run_cli(
        "simulate-cohort", "--config", DEFAULT_CONFIG, "--seed", load_config().seed, "--out", out
    )
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == BUNDLED_COHORT.read_bytes()


def test_another_seed_gives_another_cohort(run_cli, tmp_path):
    out = tmp_path / "other.csv"
    assert run_cli("simulate-cohort", "--seed", 12345, "--out", out).exit_code == 0
    assert out.read_bytes() != BUNDLED_COHORT.read_bytes()
    assert run_cli("validate", out).exit_code == 0


def test_exact_study_design(cohort_table, subject_rates):
    sizes = subject_rates["group"].value_counts().to_dict()
    assert sizes == {"MS_naive": 27, "HC": 8, "MS_NTZ": 8, "NMOSD": 7}
    assert sorted(cohort_table["subset"].unique()) == ["Th1", "Th17", "Treg"]
    assert len(cohort_table) == 50 * 3
    treated = subject_rates[subject_rates["group"] == "MS_NTZ"]
    assert treated["exacerbation"].tolist().count(1) == 2
    assert subject_rates.loc[subject_rates["group"] != "MS_NTZ", "exacerbation"].isna().all()


def test_treg_gates_hold_fewer_events(cohort_table):
    medians = cohort_table.groupby("subset")["n_cells"].median()
    assert medians["Treg"] < medians["Th17"] < medians["Th1"]
    assert cohort_table["n_cells"].min() > 500


def test_r1_r2_ratios_higher_under_natalizumab(subject_rates):
    for ratio in ("Th1/Treg", "Th17/Treg"):
        treated = subject_rates.loc[subject_rates["group"] == "MS_NTZ", ratio]
        naive = subject_rates.loc[subject_rates["group"] == "MS_naive", ratio]
        result = stats.mannwhitneyu(treated, naive, alternative="two-sided", method="exact")
        assert treated.median() > naive.median()
        assert result.pvalue < 0.05


def test_r3_relative_loss_largest_in_treg(subject_rates):
    medians = subject_rates.groupby("group")[["Th1", "Th17", "Treg"]].median()
    loss = 1 - medians.loc["MS_NTZ"] / medians.loc["MS_naive"]
    assert loss["Treg"] > loss["Th1"] and loss["Treg"] > loss["Th17"]


def test_r4_exacerbators_have_the_highest_ratios(subject_rates):
    treated = subject_rates[subject_rates["group"] == "MS_NTZ"]
    for ratio in ("Th1/Treg", "Th17/Treg"):
        events = treated.loc[treated["exacerbation"] == 1, ratio]
        others = treated.loc[treated["exacerbation"] == 0, ratio]
        assert events.min() > others.max()
        exact = stats.mannwhitneyu(events, others, alternative="two-sided", method="exact")
        assert exact.statistic == 12 and exact.pvalue == pytest.approx(2 / 28)


def test_positive_rates_are_biologically_plausible(subject_rates):
    medians = subject_rates.groupby("group")[["Th1", "Th17", "Treg"]].median()
    untreated = medians.drop(index="MS_NTZ")
    assert (untreated["Treg"] < 0.20).all()  # Treg largely CD49d-negative (B9)
    assert (untreated[["Th1", "Th17"]] > 0.5).all().all()
    loss = 1 - medians.loc["MS_NTZ"] / medians.loc["MS_naive"]
    assert 0.10 < loss["Th1"] < 0.45  # Putzki 2010: about 25% fewer alpha4+ T cells


def test_every_parameter_has_a_source():
    config = load_config()
    assert set(PARAMETERS) <= set(config.sources)
    assert all(text.strip() for text in config.sources.values())


def test_config_without_source_is_refused(tmp_path):
    text = DEFAULT_CONFIG.read_text()
    start = text.index("[parameters.kappa]")
    source_line = text.index("source", start)
    broken = text[:source_line] + "# no source\n" + text[text.index("\n", source_line) + 1 :]
    path = tmp_path / "broken.toml"
    path.write_text(broken)
    with pytest.raises(
        ConfigError, match=r"broken\.toml: 'source'|parameters\.kappa has no source"
    ):
        CohortConfig.from_toml(path)


def test_config_with_impossible_value_is_refused(run_cli, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_CONFIG.read_text().replace("exacerbations = 2", "exacerbations = 9"))
    result = run_cli("simulate-cohort", "--config", path, "--out", tmp_path / "x.csv")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"{path}: design.exacerbations must lie between 0 and the MS_NTZ group size"
    )
    assert not (tmp_path / "x.csv").exists()


def test_percentages_agree_with_counts(cohort_table):
    recomputed = 100 * cohort_table["n_cd49d_pos"] / cohort_table["n_cells"]
    assert np.allclose(recomputed, cohort_table["pct_cd49d_pos"], atol=0.005 + 1e-9)
