"""Supplementary figures S4 (type-I error) and S5 (simulated cohort vs the study's findings).

Each figure is drawn from fixture files into tmp_path (PDF and PNG), and what it draws is read
back from the matplotlib artists and compared with its input files.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import fig_cohort_findings, fig_type_i_error
from analysis.frequentist import frequentist_table, relative_loss, subject_measures
from models.data import load_cohort
from simulations.summarise import TYPE_I_COLUMNS, power_table, type_i_table

ROOT = Path(__file__).resolve().parent.parent
COHORT = ROOT / "data" / "kimura2016_simulated.csv"
FINDINGS = ROOT / "data" / "study_findings.csv"
COHORT_CONFIG = ROOT / "simulations" / "configs" / "kimura2016_cohort.toml"
FIXTURE_POWER = ROOT / "tests" / "data" / "results" / "power"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: (plan, design, endpoints, frequentist analyses, null scenarios, n grid) of the fixture plans.
FIXTURE_PLANS = {
    "cross_sectional": (
        "cross_sectional",
        ["ratio_fold_change_Th17_Treg", "ratio_fold_change_Th1_Treg"],
        ["mann_whitney", "mixed_model"],
        ["null", "null_ratio"],
        [4, 8, 16],
    ),
    "mechanism_paired": (
        "paired",
        ["kappa_difference_Treg_Th17", "kappa_difference_Treg_Th1"],
        ["wilcoxon", "mixed_model"],
        ["null"],
        [6, 12],
    ),
    "prognostic": (
        "prognostic",
        ["exacerbation_log_or"],
        ["logistic_lr", "logistic_wald", "mixed_model"],
        ["null"],
        [20, 40, 80],
    ),
}
REPLICATES = 40


def null_records(plan: str, rng: np.random.Generator) -> pd.DataFrame:
    """Replicate records of a plan's null cells: rejections at about the nominal 2.5%, a
    Bayesian ROPE rule without a nominal level, one failed analysis, and one cell (the first
    endpoint's first analysis at the largest n) that rejects far too often."""
    design, endpoints, frequentist, scenarios, grid = FIXTURE_PLANS[plan]
    analyses = [*((a, 0.025) for a in frequentist), ("bayes_direction", 0.025)]
    analyses.append(("bayes_rope", np.nan))
    rows = []
    for scenario in scenarios:
        for n in grid:
            for endpoint in endpoints:
                for analysis, level in analyses:
                    rate = (
                        0.4
                        if (n, endpoint, analysis) == (grid[-1], endpoints[0], frequentist[0])
                        else 0.025
                    )
                    success = rng.random(REPLICATES) < rate
                    status = ["ok"] * REPLICATES
                    if analysis == "mixed_model" and n == grid[0]:
                        status[0] = "error"
                    rows += [
                        {
                            "design": design,
                            "scenario": scenario,
                            "endpoint": endpoint,
                            "analysis": analysis,
                            "n": n,
                            "replicate": rep,
                            "success": bool(success[rep]),
                            "status": status[rep],
                            "nominal_level": level,
                        }
                        for rep in range(REPLICATES)
                    ]
    return pd.DataFrame(rows)


def write_type_i(power_dir: Path, plan: str, seed: int = 0) -> Path:
    """``power_dir/plan/type_i_error.csv`` as the power command writes it, from fixture records."""
    records = null_records(plan, np.random.default_rng(seed))
    table = type_i_table(power_table(records))
    path = power_dir / plan / "type_i_error.csv"
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)
    return path


@pytest.fixture
def power_dir(tmp_path) -> Path:
    folder = tmp_path / "power"
    for index, plan in enumerate(FIXTURE_PLANS):
        write_type_i(folder, plan, seed=index)
    return folder


def drawn_rates(fig) -> dict[str, np.ndarray]:
    """The rejection rates drawn, by series gid ``rate|plan|endpoint|analysis|scenario``."""
    return {
        line.get_gid(): line.get_ydata()
        for ax in fig.axes
        for line in ax.get_lines()
        if (line.get_gid() or "").startswith("rate|")
    }


def test_type_i_fixture_has_the_real_columns(power_dir):
    table = pd.read_csv(power_dir / "prognostic" / "type_i_error.csv")
    assert list(table.columns) == TYPE_I_COLUMNS


def test_type_i_figure_writes_pdf_and_png(power_dir, tmp_path):
    paths = fig_type_i_error.make(power_dir, tmp_path / "fig" / "figS4_type_i")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert paths[0].read_bytes().startswith(b"%PDF")
    assert paths[1].read_bytes().startswith(PNG_SIGNATURE)


def test_type_i_figure_has_one_panel_per_plan_given(power_dir):
    fig = fig_type_i_error.figure(power_dir)
    panels = [ax.get_gid() for ax in fig.axes if (ax.get_gid() or "").startswith("panel|")]
    plt.close(fig)
    assert panels == [f"panel|{plan}" for plan in FIXTURE_PLANS]


def test_type_i_figure_draws_the_csv_rates_with_a_nominal_level(power_dir):
    fig = fig_type_i_error.figure(power_dir)
    drawn = drawn_rates(fig)
    plt.close(fig)
    expected = {}
    for plan in FIXTURE_PLANS:
        table = pd.read_csv(
            power_dir / plan / "type_i_error.csv", keep_default_na=False, na_values=[""]
        )
        table = table[table["nominal_level"].notna()].sort_values("n", kind="stable")
        for (endpoint, analysis, scenario), rows in table.groupby(
            ["endpoint", "analysis", "scenario"]
        ):
            expected[f"rate|{plan}|{endpoint}|{analysis}|{scenario}"] = rows["rejection_rate"]
    assert set(drawn) == set(expected)
    assert not any("bayes_rope" in gid for gid in drawn)
    for gid, rates in expected.items():
        np.testing.assert_allclose(drawn[gid], rates.to_numpy(dtype=float))


def test_type_i_figure_rings_the_cells_outside_the_familywise_tolerance(power_dir):
    fig = fig_type_i_error.figure(power_dir)
    rings = sum(
        len(line.get_xdata())
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_gid() == "flag"
    )
    plt.close(fig)
    flagged = 0
    for plan in FIXTURE_PLANS:
        table = pd.read_csv(power_dir / plan / "type_i_error.csv")
        flagged += int(table["within_familywise"].astype(str).eq("False").sum())
    assert rings == flagged >= len(FIXTURE_PLANS) * 1  # the fixture's too-often-rejecting cells


def test_type_i_figure_names_the_plans_not_run(power_dir):
    fig = fig_type_i_error.figure(power_dir)
    title = fig.axes[-1].get_legend().get_title().get_text()
    plt.close(fig)
    assert "Biomarker, paired" in title and "Mechanism, cross-sectional" in title
    assert "Wilson 95%" in title


def test_type_i_figure_refuses_a_folder_without_tables(tmp_path):
    with pytest.raises(click.ClickException, match=r"no type_i_error\.csv"):
        fig_type_i_error.figure(tmp_path)


@pytest.mark.skipif(
    not any(FIXTURE_POWER.glob("*/type_i_error.csv")),
    reason="tests/data/results/power/ holds no type_i_error.csv yet",
)
def test_type_i_figure_draws_the_pipeline_fixture(tmp_path):
    plans = sorted(p.parent.name for p in FIXTURE_POWER.glob("*/type_i_error.csv"))
    paths = fig_type_i_error.make(FIXTURE_POWER, tmp_path / "figS4_type_i")
    assert all(p.stat().st_size > 0 for p in paths)
    fig = fig_type_i_error.figure(FIXTURE_POWER)
    panels = sorted(ax.get_gid().split("|")[1] for ax in fig.axes if ax.get_gid())
    plt.close(fig)
    assert panels == [p for p in plans if p in {row[0] for row in fig_type_i_error.PLANS}]


# --- S5: the simulated cohort against the study's findings ------------------------------------


@pytest.fixture(scope="module")
def frequentist_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frequentist") / "frequentist.csv"
    frequentist_table(load_cohort(COHORT)).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cohort_figure(frequentist_csv):
    fig = fig_cohort_findings.figure(COHORT, frequentist_csv, FINDINGS, COHORT_CONFIG)
    yield fig
    plt.close(fig)


def test_findings_file_has_r1_to_r4_with_their_source():
    findings = pd.read_csv(FINDINGS)
    assert list(findings["finding"]) == ["R1", "R2", "R3", "R4"]
    assert findings["source"].str.contains("Kimura et al. 2016").all()
    assert findings["reported"].str.strip().str.len().gt(0).all()


def test_cohort_figure_writes_pdf_and_png(frequentist_csv, tmp_path):
    paths = fig_cohort_findings.make(
        COHORT, frequentist_csv, FINDINGS, COHORT_CONFIG, tmp_path / "figS5_cohort_findings"
    )
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert paths[0].read_bytes().startswith(b"%PDF")
    assert paths[1].read_bytes().startswith(PNG_SIGNATURE)


def test_cohort_figure_draws_the_cohorts_ratio_medians(cohort_figure):
    measures = subject_measures(load_cohort(COHORT))
    ratios = measures[measures["quantity"] == "cd49d_ratio"]
    medians = ratios.groupby(["subset", "group"])["value"].median()
    drawn = {
        line.get_gid(): line.get_ydata()
        for ax in cohort_figure.axes
        for line in ax.get_lines()
        if (line.get_gid() or "").startswith("median|")
    }
    expected = {
        f"median|{ratio}|{group}": medians[(ratio, group)]
        for ratio in ("Th1/Treg", "Th17/Treg")
        for group in ("MS_naive", "MS_NTZ")
    }
    assert set(drawn) == set(expected)
    for gid, median in expected.items():
        np.testing.assert_allclose(drawn[gid], median)


def test_cohort_figure_draws_the_cohorts_relative_losses(cohort_figure):
    loss = relative_loss(subject_measures(load_cohort(COHORT)))
    bars = {
        patch.get_gid(): patch.get_height()
        for ax in cohort_figure.axes
        for patch in ax.patches
        if (patch.get_gid() or "").startswith("loss|")
    }
    assert bars == pytest.approx({f"loss|{s}": 100 * loss[s] for s in ("Th1", "Th17", "Treg")})


def test_cohort_figure_titles_read_the_findings_file(frequentist_csv, tmp_path):
    findings = pd.read_csv(FINDINGS)
    findings.loc[findings["finding"] == "R3", "reported"] = "a reworded finding"
    edited = tmp_path / "findings.csv"
    findings.to_csv(edited, index=False)
    fig = fig_cohort_findings.figure(COHORT, frequentist_csv, edited, COHORT_CONFIG)
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert any("R3" in t and "a reworded finding" in t for t in titles)


def test_cohort_figure_says_the_cohort_is_simulated_and_chosen(cohort_figure):
    title = cohort_figure.get_suptitle()
    assert "SIMULATED" in title
    config = tomllib.loads(COHORT_CONFIG.read_text(encoding="utf-8"))
    log_or = config["parameters"]["exacerbation_log_or"]["value"]
    assert f"seed {config['seed']}," in title and f"log OR {log_or:g} per SD" in title
    assert "R1–R4" in title


def test_cohort_figure_says_whether_the_cohort_shows_each_finding(cohort_figure):
    titles = " ".join(ax.get_title() for ax in cohort_figure.axes)
    for finding in ("R1", "R2", "R3", "R4"):
        assert finding in titles
    # The bundled seed was chosen so that it shows all four.
    assert titles.count("simulated cohort shows it") == 4


def test_cohort_figure_refuses_a_frequentist_table_of_another_cohort(frequentist_csv, tmp_path):
    table = pd.read_csv(frequentist_csv)
    is_ratio_median = (table["analysis"] == "descriptive") & (table["quantity"] == "cd49d_ratio")
    table.loc[is_ratio_median, "median"] *= 1.1
    other = tmp_path / "frequentist.csv"
    table.to_csv(other, index=False)
    with pytest.raises(ValueError, match="does not match"):
        fig_cohort_findings.figure(COHORT, other, FINDINGS, COHORT_CONFIG)


def test_cohort_figure_refuses_a_findings_file_without_r4(frequentist_csv, tmp_path):
    findings = pd.read_csv(FINDINGS)
    short = tmp_path / "findings.csv"
    findings[findings["finding"] != "R4"].to_csv(short, index=False)
    with pytest.raises(ValueError, match="R4"):
        fig_cohort_findings.figure(COHORT, frequentist_csv, short, COHORT_CONFIG)
