"""The manuscript's numbers (``analysis.numbers``) for Table 2, Table S1 and the figures, on
result files built here, and what the compiled manuscript shows of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typst
from click.testing import CliRunner

from analysis import numbers as numbers_module
from analysis.numbers import gather
from simulations.sample_size import SAMPLE_SIZE_COLUMNS
from tests.conftest import BUNDLED_COHORT, ROOT

#: Sample-size rows of two plans: every status, blank interval ends, two targets per curve.
SAMPLE_SIZES = {
    "cross_sectional": [
        (
            "cross_sectional",
            "ratio_fold_change_Th17_Treg",
            "mann_whitney",
            0.8,
            20,
            16,
            27,
            19.4,
            16,
            24,
            4,
            48,
            "ok",
            "",
        ),
        (
            "cross_sectional",
            "ratio_fold_change_Th17_Treg",
            "mann_whitney",
            0.9,
            27,
            21,
            None,
            26.2,
            24,
            32,
            4,
            48,
            "ok",
            "interval reaches beyond the grid (n_high > 48)",
        ),
        (
            "cross_sectional",
            "ratio_fold_change_Th17_Treg",
            "mixed_model",
            0.8,
            4,
            None,
            6,
            None,
            None,
            None,
            4,
            48,
            "below_grid",
            "power at the smallest n simulated (4) already reaches 0.8",
        ),
        (
            "cross_sectional",
            "ratio_fold_change_Th17_Treg",
            "mixed_model",
            0.9,
            5,
            None,
            8,
            4.5,
            4,
            6,
            4,
            48,
            "ok",
            "interval reaches below the grid (n_low < 4)",
        ),
        (
            "cross_sectional",
            "ratio_fold_change_Th1_Treg",
            "mann_whitney",
            0.8,
            17,
            13,
            23,
            16.1,
            16,
            24,
            4,
            48,
            "ok",
            "",
        ),
        (
            "cross_sectional",
            "ratio_fold_change_Th1_Treg",
            "mann_whitney",
            0.9,
            None,
            40,
            None,
            None,
            None,
            None,
            4,
            48,
            "beyond_grid",
            "power at the largest n simulated (48) is below 0.9",
        ),
    ],
    "prognostic": [
        (
            "prognostic",
            "exacerbation_log_or",
            "logistic_lr",
            0.8,
            42,
            33,
            49,
            41.2,
            40,
            60,
            20,
            120,
            "ok",
            "",
        ),
        (
            "prognostic",
            "exacerbation_log_or",
            "logistic_lr",
            0.9,
            70,
            55,
            90,
            69.9,
            40,
            80,
            20,
            120,
            "coarse_grid",
            "crossing between n=40 and n=80, further apart than the validated 1.5x",
        ),
    ],
}
#: Columns of ``prior_sensitivity.csv`` as ``analysis.fit_report`` writes them.
PRIOR_SENSITIVITY_COLUMNS = [
    "estimand",
    "group",
    "subset",
    "mean_default",
    "sd_default",
    "q2.5_default",
    "q97.5_default",
    "mean_uniform_saturation",
    "sd_uniform_saturation",
    "q2.5_uniform_saturation",
    "q97.5_uniform_saturation",
    "shift_in_sd",
]
PRIOR_SENSITIVITY = [
    ("pct_pos", "MS_NTZ", "Treg", 4.41, 0.73, 3.08, 5.98, 4.35, 0.74, 3.00, 5.93, -0.075),
    ("ratio_fold_change", None, "Th17", 1.92, 0.24, 1.50, 2.46, 1.90, 0.23, 1.50, 2.40, -0.073),
    ("saturation_mean", None, None, 0.86, 0.056, 0.74, 0.95, 0.80, 2e-16, 0.80, 0.80, -1.096),
    ("saturation", "NTZ01", None, 0.86, 0.084, 0.67, 0.98, 0.78, 0.104, 0.61, 0.97, -0.912),
    (
        "kappa_difference",
        None,
        "Th1",
        -0.022,
        0.038,
        -0.117,
        0.039,
        -0.022,
        0.039,
        -0.111,
        0.043,
        0.015,
    ),
]


def write_sample_sizes(results: Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for plan, rows in SAMPLE_SIZES.items():
        table = pd.DataFrame(rows, columns=SAMPLE_SIZE_COLUMNS)
        folder = results / "power" / plan
        folder.mkdir(parents=True)
        table.to_csv(folder / "sample_size.csv", index=False)
        tables[plan] = pd.read_csv(
            folder / "sample_size.csv", keep_default_na=False, na_values=[""]
        )
    return tables


def write_prior_sensitivity(results: Path, model: str = "saturation") -> pd.DataFrame:
    folder = results / "fits" / model
    folder.mkdir(parents=True)
    pd.DataFrame(PRIOR_SENSITIVITY, columns=PRIOR_SENSITIVITY_COLUMNS).to_csv(
        folder / "prior_sensitivity.csv", index=False
    )
    return pd.read_csv(folder / "prior_sensitivity.csv")


def blank_to_none(value):
    return None if isinstance(value, float) and np.isnan(value) else value


def test_table_2_rows_are_the_sample_size_rows(tmp_path):
    tables = write_sample_sizes(tmp_path)
    power = gather(tmp_path, BUNDLED_COHORT)["power"]
    assert set(power) == set(SAMPLE_SIZES)
    for plan, table in tables.items():
        cells = [
            (endpoint, analysis, target)
            for endpoint, analyses in power[plan].items()
            for analysis, targets in analyses.items()
            for target in targets
        ]
        assert len(cells) == len(table)  # one cell per row, none lost or added
        for row in table.to_dict("records"):
            cell = power[plan][row["endpoint"]][row["analysis"]][f"{row['target_power']:g}"]
            whole = {
                "n": row["n_required"],
                "low": row["n_low"],
                "high": row["n_high"],
                "n_min_grid": row["n_min_grid"],
                "n_max_grid": row["n_max_grid"],
            }
            for key, value in whole.items():
                expected = blank_to_none(value)
                assert cell[key] == (None if expected is None else int(expected))
                assert cell[key] is None or isinstance(cell[key], int)
            assert cell["n_real"] == blank_to_none(row["n_real"])
            assert cell["status"] == row["status"]
            assert cell["note"] == blank_to_none(row["note"])
    json.dumps(power, allow_nan=False)


def test_table_s1_rows_are_the_prior_sensitivity_rows_in_file_order(tmp_path):
    table = write_prior_sensitivity(tmp_path)
    rows = gather(tmp_path, BUNDLED_COHORT)["prior_sensitivity"]["saturation"]
    assert [list(row) for row in rows] == [PRIOR_SENSITIVITY_COLUMNS] * len(table)
    for row, expected in zip(rows, table.to_dict("records"), strict=True):
        assert row == {k: blank_to_none(v) for k, v in expected.items()}
    json.dumps(rows, allow_nan=False)


def test_a_fit_without_prior_sensitivity_adds_no_section(tmp_path):
    (tmp_path / "fits" / "positive_rate").mkdir(parents=True)
    assert "prior_sensitivity" not in gather(tmp_path, BUNDLED_COHORT)


def test_figures_lists_the_pdfs_in_the_figures_folder(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("fig2_mechanism.pdf", "fig1_data.pdf", "fig1_data.png", "notes.txt"):
        (figures / name).write_bytes(b"%PDF-1.4\n")
    assert gather(tmp_path, BUNDLED_COHORT, figures_dir=figures)["figures"] == [
        "fig1_data",
        "fig2_mechanism",
    ]
    assert gather(tmp_path, BUNDLED_COHORT, figures_dir=tmp_path / "none")["figures"] == []
    assert "figures" not in gather(tmp_path, BUNDLED_COHORT)  # the old call: no figures listed


def test_the_command_reads_figures_beside_the_output_by_default(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    paper = tmp_path / "paper"
    (paper / "figures").mkdir(parents=True)
    (paper / "figures" / "fig4_planning.pdf").write_bytes(b"%PDF-1.4\n")
    output = paper / "generated" / "numbers.json"
    arguments = [str(results), str(BUNDLED_COHORT), str(output)]
    result = CliRunner().invoke(numbers_module.main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(output.read_text())["figures"] == ["fig4_planning"]


def test_the_cohort_section_states_how_the_cohort_was_chosen(tmp_path):
    cohort = gather(tmp_path, BUNDLED_COHORT)["cohort"]
    assert cohort["findings"] == {"R1": True, "R2": True, "R3": True, "R4": True}
    simulation = cohort["simulation"]
    config = ROOT / "simulations" / "configs" / "kimura2016_cohort.toml"
    assert simulation["config"] == config.name
    assert isinstance(simulation["seed"], int)
    assert "exacerbation_log_or" in simulation and "kappa" in simulation
    assert "simulation" not in gather(tmp_path, BUNDLED_COHORT, cohort_config=None)["cohort"]


def test_type_i_summary_counts_the_cells_outside_each_tolerance(tmp_path):
    folder = tmp_path / "power" / "mechanism"
    folder.mkdir(parents=True)
    base = {"design": "cross_sectional", "endpoint": "kappa_difference_Treg_Th17", "n_failed": 0}
    rows = [
        {
            **base,
            "scenario": "null",
            "analysis": "mann_whitney",
            "n": 8,
            "rejection_rate": 0.02,
            "n_reps": 100,
            "nominal_level": 0.025,
            "within_3_mcse": True,
            "familywise_mcse": 3.0,
            "within_familywise": True,
        },
        {
            **base,
            "scenario": "null",
            "analysis": "mann_whitney",
            "n": 16,
            "rejection_rate": 0.09,
            "n_reps": 100,
            "nominal_level": 0.025,
            "within_3_mcse": False,
            "familywise_mcse": 3.0,
            "within_familywise": False,
        },
        {
            **base,
            "scenario": "null",
            "analysis": "bayes_precision",
            "n": 8,
            "rejection_rate": 0.5,
            "n_reps": 100,
            "nominal_level": None,
            "within_3_mcse": None,
            "familywise_mcse": 3.0,
            "within_familywise": None,
        },
    ]
    pd.DataFrame(rows).to_csv(folder / "type_i_error.csv", index=False)
    summary = gather(tmp_path, BUNDLED_COHORT)["type_i_error"]["mechanism"]
    assert (summary["checked"], summary["outside_3_mcse"], summary["outside_familywise"]) == (
        2,
        1,
        1,
    )
    assert [(f["analysis"], f["n"]) for f in summary["flagged"]] == [("mann_whitney", 16)]
    assert summary["pooled"]["null"] == {
        "mann_whitney": {"rejections": 11, "trials": 200, "rate": 0.055, "nominal_level": 0.025}
    }


def table_cells(figure: dict) -> list[dict]:
    """The body cells (header left out) of a queried table figure."""
    table = figure["body"]
    while table["func"] != "table":
        table = table["child"]
    return [c for c in table["children"] if c["func"] != "header"]


@pytest.fixture
def paper(tmp_path):
    """A copy of the manuscript with result files for Tables 2 and S1 and one built figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = tmp_path / "paper"
    target.mkdir()
    for name in ("manuscript.typ", "references.bib"):
        shutil.copy2(ROOT / "paper" / name, target / name)
    (target / "figures").mkdir()
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(target / "figures" / "fig2_mechanism.pdf")
    plt.close(fig)
    results = tmp_path / "results"
    write_sample_sizes(results)
    write_prior_sensitivity(results)
    write_prior_sensitivity(results, model="saturation_per_subset")
    numbers = gather(results, BUNDLED_COHORT, figures_dir=target / "figures")
    (target / "generated").mkdir()
    (target / "generated" / "numbers.json").write_text(json.dumps(numbers), encoding="utf-8")
    return target


def query(paper: Path, selector: str) -> list[dict]:
    source = str(paper / "manuscript.typ")
    return json.loads(typst.query(source, selector, root=str(paper)))


def test_the_manuscript_shows_table_2_table_s1_and_only_the_built_figures(paper):
    [table_2] = query(paper, "<tab-sample-size>")
    curves = sum(len({(r[1], r[2]) for r in rows}) for rows in SAMPLE_SIZES.values())
    assert len(table_cells(table_2)) == 7 * curves  # one row per plan x endpoint x analysis
    [table_s1] = query(paper, "<tab-prior-sensitivity>")
    # per model one spanning title row, then 4 cells per row of its prior_sensitivity.csv
    assert len(table_cells(table_s1)) == 2 * (1 + 4 * len(PRIOR_SENSITIVITY))
    assert [image["source"] for image in query(paper, "image")] == ["figures/fig2_mechanism.pdf"]
    figures = query(paper, "figure.where(kind: image)")
    assert len(figures) == 10  # every figure has its caption; the missing ones a placeholder
    assert typst.compile(str(paper / "manuscript.typ"), root=str(paper)).startswith(b"%PDF")
