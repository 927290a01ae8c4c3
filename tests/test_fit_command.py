"""cd49d fit and cd49d compare: outputs, their schema, the gate's exit status, bad input."""

import pandas as pd
import pytest
import xarray as xr

from models.estimands import COLUMNS
from tests.conftest import BAD_FILES, BUNDLED_COHORT, GOOD_MINIMAL

QUICK = ["--draws", "400", "--tune", "500", "--min-ess", "150", "--rhat-max", "1.05"]


@pytest.fixture(scope="module")
def positive_rate_run(tmp_path_factory):
    """A quick positive_rate fit of the bundled cohort without its NMOSD patients and without
    follow-up (no exacerbation column); the output folder and what the command printed."""
    from click.testing import CliRunner

    from analysis.cli import main

    out = tmp_path_factory.mktemp("fit")
    cohort = tmp_path_factory.mktemp("cohort") / "no_nmosd.csv"
    rows = pd.read_csv(BUNDLED_COHORT, dtype=str, keep_default_na=False)
    rows[rows["group"] != "NMOSD"].drop(columns="exacerbation").to_csv(cohort, index=False)
    result = CliRunner().invoke(
        main, ["fit", str(cohort), "--model", "positive_rate", "--out", str(out), *QUICK]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def positive_rate_fit(positive_rate_run):
    return positive_rate_run[0]


def test_a_group_the_cohort_lacks_is_in_no_table(positive_rate_run):
    out, printed = positive_rate_run
    assert (
        "the cohort has no group NMOSD: every table leaves out the rows that rest on them "
        "(their parameters stay in fit.nc, informed by the prior alone)"
    ) in printed
    assert "NMOSD" not in printed.split("the cohort has no group NMOSD")[1]
    for name in (
        "estimands.csv",
        "identification.csv",
        "power_scaling.csv",
        "predictive_checks.csv",
        "ppc_new_subjects.csv",
    ):
        assert "NMOSD" not in (out / name).read_text(encoding="utf-8"), name
    posterior = xr.open_datatree(out / "fit.nc")["posterior"]
    assert "NMOSD" in posterior["pct_pos"].coords["group"].values  # the graph keeps it


def test_fit_writes_every_output(positive_rate_fit):
    names = {p.name for p in positive_rate_fit.iterdir()}
    assert names == {
        "fit.nc",
        "estimands.csv",
        "diagnostics.csv",
        "identification.csv",
        "power_scaling.csv",
        "predictive_checks.csv",
        "ppc_new_subjects.csv",
        "ppc_prior.png",
        "ppc_posterior.png",
    }


def test_estimands_csv_schema(positive_rate_fit):
    table = pd.read_csv(positive_rate_fit / "estimands.csv", keep_default_na=False)
    assert list(table.columns) == COLUMNS
    counts = table["estimand"].value_counts().to_dict()
    assert counts == {
        "pct_pos": 9,
        "reduction": 3,
        "ratio_fold_change": 2,
        "differential_reduction": 2,
    }
    assert set(table.loc[table["estimand"] == "ratio_fold_change", "subset"]) == {"Th1", "Th17"}
    units = table.groupby("estimand")["unit"].agg(set).to_dict()
    assert units == {
        "pct_pos": {"percent"},
        "reduction": {"fraction"},
        "ratio_fold_change": {"ratio"},
        "differential_reduction": {"difference of fractions"},
    }
    numeric = table[["mean", "q2.5", "q97.5"]].astype(float)
    assert (numeric["q2.5"] <= numeric["mean"]).all() and (
        numeric["mean"] <= numeric["q97.5"]
    ).all()


def test_netcdf_reopens_with_every_group(positive_rate_fit):
    idata = xr.open_datatree(positive_rate_fit / "fit.nc")
    assert {
        "posterior",
        "prior",
        "prior_predictive",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "sample_stats",
    } <= set(idata.children)
    assert idata.attrs["model"] == "positive_rate"
    assert idata.attrs["prior_set"] == "default"
    assert len(idata.attrs["input_cohort_sha256"]) == 64


def test_descriptive_model_matches_raw_proportions_for_large_cells(positive_rate_fit):
    """With ~8000 events per gate and modest subject spread the population-average rate is close
    to the mean of subject rates; the pooled check uses subjects' mean rate per cell."""
    estimands = pd.read_csv(positive_rate_fit / "estimands.csv")
    cohort = pd.read_csv(BUNDLED_COHORT).query("group != 'NMOSD'")  # as fitted
    cohort["pct"] = 100 * cohort["n_cd49d_pos"] / cohort["n_cells"]
    raw = cohort.groupby(["group", "subset"])["pct"].mean()
    rates = estimands[estimands["estimand"] == "pct_pos"].set_index(["group", "subset"])
    for key, value in raw.items():
        assert abs(rates.loc[key, "mean"] - value) < 3 * rates.loc[key, "sd"] + 0.5, key


def test_failed_gate_exits_3_and_names_diagnostics(run_cli, tmp_path):
    """A failed fit writes only its diagnostics, and removes an earlier fit's outputs from the
    folder: a stale fit.nc would pass for the current one."""
    out = tmp_path / "failed"
    out.mkdir()
    for name in ("fit.nc", "estimands.csv", "ppc_posterior.png"):
        (out / name).write_text("an earlier fit's output", encoding="utf-8")
    result = run_cli(
        "fit",
        GOOD_MINIMAL,
        "--model",
        "positive_rate",
        "--out",
        out,
        "--draws",
        "15",
        "--tune",
        "15",
        "--chains",
        "2",
    )
    assert result.exit_code == 3
    assert "failed the diagnostics gate after target acceptance 0.9, 0.97" in result.stderr
    assert "bulk ESS < 400" in result.stderr
    assert "removed the previous fit's outputs" in result.stderr
    assert "fit.nc, estimands.csv, ppc_posterior.png" in result.stderr
    assert {p.name for p in out.iterdir()} == {"diagnostics.csv"}


def test_bad_input_reaches_the_loader_errors(run_cli, tmp_path):
    out = tmp_path / "never"
    result = run_cli("fit", BAD_FILES / "duplicate_row.csv", "--model", "saturation", "--out", out)
    assert result.exit_code == 2
    assert "duplicate row for subject 'M01' and subset 'Th1'" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_model_that_cannot_take_the_cohort_exits_2(run_cli, tmp_path):
    path = tmp_path / "untreated.csv"
    path.write_text(
        "\n".join(line for line in GOOD_MINIMAL.read_text().splitlines() if "MS_NTZ" not in line)
        + "\n"
    )
    result = run_cli("fit", path, "--model", "exacerbation", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"{path}: the exacerbation model needs at least two MS_NTZ patients"
    )


@pytest.mark.slow
def test_a_paired_cohort_passes_the_gate_at_default_settings(run_cli, tmp_path):
    """Samples that share a patient tie the group means together: with nutpie's diagonal mass
    matrix such a cohort failed the gate (R-hat 1.06 on the group means after both attempts);
    the fit now adapts a low-rank one, says so, and passes at the default draws."""
    from simulations.plan import load_plan
    from simulations.trials import Cell, TrialGenerator
    from tests.conftest import ROOT

    plan = load_plan(ROOT / "simulations" / "plans" / "paired.toml")
    path = tmp_path / "paired.csv"
    TrialGenerator(plan, Cell("alternative", 12)).draw(3).to_csv(path, index=False)
    out = tmp_path / "fit"
    args = ["--model", "positive_rate", "--out", out, "--no-sensitivity"]
    result = run_cli("fit", path, *args)
    assert result.exit_code == 0, result.stderr
    assert "samples share patients (patient_id): nutpie adapts a low-rank" in result.stderr
    assert xr.open_datatree(out / "fit.nc").attrs["mass_matrix"] == "low_rank"


def test_power_scaling_and_identification_share_their_verdicts(positive_rate_fit):
    scaling = pd.read_csv(positive_rate_fit / "power_scaling.csv")
    identification = pd.read_csv(positive_rate_fit / "identification.csv")
    words = {"data", "data and prior", "prior"}
    assert set(scaling["verdict"]) <= words
    assert set(identification["informed_by"]) <= words | {"fixed"}
    assert (scaling.loc[scaling["prior"] < 0.05, "verdict"] == "data").all()
