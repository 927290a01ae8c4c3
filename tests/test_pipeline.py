"""The pipeline (Snakefile), the manuscript's numbers and its compilation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from analysis import fig_data_estimates, fig_planning
from analysis.manuscript import compile_pdf
from analysis.numbers import gather
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "data" / "results"
COHORT = ROOT / "data" / "kimura2016_simulated.csv"
#: What the pipeline reads besides the result files: copied into a scratch tree for dry-runs.
TREE = [
    "Snakefile",
    "pipeline.yaml",
    "uv.lock",
    "pyproject.toml",
    "analysis",
    "models",
    "simulations",
    "paper",
    "data",
]


def test_numbers_are_the_result_files_values():
    numbers = gather(FIXTURE, COHORT)
    assert numbers["cohort"]["by_group"] == {"HC": 8, "MS_NTZ": 8, "MS_naive": 27, "NMOSD": 7}
    assert "SIMULATED" in numbers["cohort"]["simulated_note"]
    estimands = pd.read_csv(FIXTURE / "fits" / "saturation" / "estimands.csv")
    kappa = estimands[estimands["estimand"] == "kappa"].iloc[0]
    assert numbers["fits"]["saturation"]["kappa"] == {
        "mean": kappa["mean"],
        "sd": kappa["sd"],
        "low": kappa["q2.5"],
        "high": kappa["q97.5"],
    }
    tests = pd.read_csv(FIXTURE / "frequentist" / "frequentist.csv")
    row = tests[(tests["analysis"] == "mann_whitney") & (tests["subset"] == "Th17/Treg")].iloc[0]
    reported = numbers["frequentist"]["mann_whitney"]["cd49d_ratio"]["Th17/Treg"]
    assert reported["p_value"] == row["p_value"]
    sizes = pd.read_csv(FIXTURE / "power" / "cross_sectional" / "sample_size.csv")
    size = sizes[
        (sizes["endpoint"] == "ratio_fold_change_Th17_Treg")
        & (sizes["analysis"] == "mann_whitney")
        & (sizes["target_power"] == 0.8)
    ].iloc[0]
    cell = numbers["power"]["cross_sectional"]["ratio_fold_change_Th17_Treg"]["mann_whitney"]["0.8"]
    assert {key: cell[key] for key in ("n", "low", "high", "status")} == {
        "n": int(size["n_required"]),
        "low": int(size["n_low"]),
        "high": int(size["n_high"]),
        "status": size["status"],
    }
    json.dumps(numbers, allow_nan=False)  # no NaN reaches the manuscript


def test_numbers_leave_out_sections_without_results(tmp_path):
    numbers = gather(tmp_path, COHORT)
    assert set(numbers) == {"cohort"}


def test_the_data_figure_shows_every_subject_and_the_posterior_rates(tmp_path):
    import matplotlib.pyplot as plt

    estimands = FIXTURE / "fits" / "positive_rate" / "estimands.csv"
    shown = []
    original = plt.Axes.scatter
    plt.Axes.scatter = lambda ax, x, y, **kw: shown.append(len(y)) or original(ax, x, y, **kw)
    try:
        paths = fig_data_estimates.make(COHORT, estimands, tmp_path / "fig1")
    finally:
        plt.Axes.scatter = original
    assert sum(shown) == len(pd.read_csv(COHORT))  # one point per subject and subset
    assert paths[0].read_bytes().startswith(b"%PDF")


def test_the_planning_figure_is_drawn_from_the_power_tables(tmp_path):
    paths = fig_planning.make(FIXTURE / "power", tmp_path / "fig4")
    assert [p.name for p in paths] == ["fig4.pdf", "fig4.png"]
    assert paths[0].read_bytes().startswith(b"%PDF") and paths[1].stat().st_size > 10_000


def test_the_manuscript_compiles_from_the_numbers_with_and_without_results(tmp_path):
    paper = tmp_path / "paper"
    shutil.copytree(
        ROOT / "paper", paper, ignore=shutil.ignore_patterns("generated", "figures", "*.pdf")
    )
    fig_planning.make(FIXTURE / "power", paper / "figures" / "fig4_planning")
    estimands = FIXTURE / "fits" / "positive_rate" / "estimands.csv"
    fig_data_estimates.make(COHORT, estimands, paper / "figures" / "fig1_data")
    for name, results in {"full": FIXTURE, "empty": tmp_path / "none"}.items():
        results.mkdir(exist_ok=True)
        numbers = paper / "generated" / f"{name}.json"
        numbers.parent.mkdir(exist_ok=True)
        numbers.write_text(json.dumps(gather(results, COHORT)), encoding="utf-8")
        output = tmp_path / f"{name}.pdf"
        compile_pdf(paper / "manuscript.typ", output, Path("generated") / f"{name}.json")
        assert output.read_bytes().startswith(b"%PDF")


def scratch_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


def planned_jobs(tree: Path) -> dict[str, int]:
    """``snakemake -n``'s job counts per rule (empty when nothing is to be done)."""
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--quiet", "rules"]
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True)
    lines = (result.stdout + result.stderr).splitlines()
    if "Job stats:" not in lines:
        return {}
    jobs = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def touch_outputs(tree: Path) -> None:
    """Every output of a complete build, newer than every input (as after a real build)."""
    listing = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--summary"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    later = time.time() + 5
    for line in listing[1:]:
        path = tree / line.split("\t")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (later, later))


def test_a_complete_build_leaves_no_work_and_a_plan_change_reruns_only_what_uses_it(tmp_path):
    tree = scratch_tree(tmp_path)
    everything = planned_jobs(tree)
    assert everything["power"] + everything["power_with_sensitivity"] == 6
    assert everything["mfi_comparison"] == 1
    assert everything["fit"] == 3 and everything["fit_with_assumptions"] == 1
    assert everything["manuscript"] == 1
    touch_outputs(tree)
    assert planned_jobs(tree) == {}
    plan = tree / "simulations" / "plans" / "prognostic.toml"
    later = time.time() + 10
    os.utime(plan, (later, later))
    assert planned_jobs(tree) == {
        "power_with_sensitivity": 1,
        "power_curve": 1,
        "sensitivity_figure": 1,
        "figure_planning": 1,
        "sample_size_validation": 1,
        "figure_type_i": 1,
        "numbers": 1,
        "manuscript": 1,
        "manifest": 1,
        "all": 1,
    }


def test_a_figure_change_redraws_the_figure_and_reruns_no_simulation(tmp_path):
    tree = scratch_tree(tmp_path)
    touch_outputs(tree)
    later = time.time() + 10
    os.utime(tree / "analysis" / "fig_power_curve.py", (later, later))
    # the planning figure reuses the power curve's table reader, and the manuscript shows it
    assert planned_jobs(tree) == {
        "power_curve": 6,
        "figure_planning": 1,
        "figure_type_i": 1,  # it reuses the power curve's colours
        "numbers": 1,  # it lists the figures built
        "manuscript": 1,
        "manifest": 1,
        "all": 1,
    }


def test_a_model_code_change_reruns_every_result_of_that_model_and_no_other(tmp_path):
    tree = scratch_tree(tmp_path)
    touch_outputs(tree)
    later = time.time() + 10
    os.utime(tree / "models" / "saturation.py", (later, later))
    jobs = planned_jobs(tree)
    assert jobs["fit"] + jobs["fit_with_assumptions"] == 4 and jobs["sbc"] == 5
    assert jobs["power"] + jobs["power_with_sensitivity"] == 6
    assert jobs["mfi_comparison"] == 1
    assert "sample_size_validation" not in jobs  # binomial draws only: no model code
