"""Every number the manuscript quotes, gathered from the result files into one JSON.

The manuscript (``paper/manuscript.typ``) reads ``numbers.json`` and types no result by hand.
This script only reads result files; it never fits or simulates. Sections, each present only
when its result files are (a section with no rows is left out):

- ``cohort``: subjects per group, the SIMULATED note, whether the cohort shows the study's
  findings R1-R4 (``findings``, ``analysis.frequentist.study_findings``), the relative loss of
  the median % CD49d+ per subset (``relative_loss``) and, under ``simulation``, the values the
  cohort was drawn with (its seed, the exacerbation log odds ratio, kappa, ...) from the cohort
  configuration file: inputs of the simulation, chosen, not results;
- ``frequentist``: the study's tests, ``{analysis: {quantity: {subset: {statistic, p_value,
  method, n, n_other, min_attainable_p}}}}``, from ``frequentist/frequentist.csv``;
- ``descriptive``: the cohort's medians and quartiles from the same file, ``{quantity:
  {subset: {group: {n, median, q25, q75}}}}``;
- ``fits``: each model's estimands, ``{model: {estimand: {group: {subset: {mean, sd, low,
  high}}}}}`` (95% equal-tailed intervals), from ``fits/MODEL/estimands.csv``;
- ``diagnostics``: per fit the largest R-hat and the smallest bulk and tail ESS over every
  posterior quantity (``fits/MODEL/diagnostics.csv``);
- ``identification``: per fit ``{parameter: {prior_sd, posterior_sd, contraction,
  informed_by}}`` (``fits/MODEL/identification.csv``);
- ``assumption_sensitivity``: per model the rows of ``fits/MODEL/assumption_sensitivity.csv``
  (the estimands refitted without the shared sigma and without the no-confounding assumption);
- ``mfi_comparison``: the rows of ``mfi/mfi_comparison.csv`` (a SIMULATED cohort of the
  study's design fitted with and without median fluorescence; ``analysis.mfi_comparison``);
- ``prior_sensitivity``: per saturation model the rows of ``fits/MODEL/prior_sensitivity.csv``
  in file order, with the file's column names (every estimand under the default prior and
  under a Uniform(0.6, 1) occupancy prior, and ``shift_in_sd``);
- ``ppc_new_subjects``: per fit, the posterior predictive check for new subjects
  (``fits/MODEL/ppc_new_subjects.csv``): checks, those with p below 0.05 (listed), the smallest;
- ``loo``: ``{model: {elpd, se, elpd_diff, dse, weight, pareto_k_above_0_7}}``;
- ``crossval``: ``{model: {crps, crps_se, crps_diff, crps_diff_se, elpd, ..., n_subjects}}``
  from ``crossval/kfold_compare.csv``;
- ``power``: each plan's sample sizes, ``{plan: {endpoint: {analysis: {"0.8": {n, low, high,
  n_real, status, note, n_min_grid, n_max_grid}}}}}``, every row of ``power/PLAN/sample_size.csv``;
- ``power_runs``: per plan its n grid, replicates per cell, endpoints, analyses, scenarios
  and failed analyses (``power/PLAN/power.csv``) and, under ``plan``, the question, design and
  assumed effect the run's ``manifest.json`` records;
- ``performance``: per plan and analysis, over the alternative scenario's cells, the range of
  95% interval coverage and the largest bias, with MCSEs (``power/PLAN/performance.csv``);
- ``type_i_error``: per plan the cells checked, those outside 3 MCSE and outside the
  family-wise tolerance (listed), and per null scenario and analysis the rejections pooled
  over n and endpoints (``power/PLAN/type_i_error.csv``);
- ``sample_size_validation``: per curve and replicates per cell the scenarios, those passing,
  the lowest coverage and the largest mean relative error with their MCSEs;
- ``sbc``: per model, replicates, failed fits, quantities outside the 95% band, the smallest
  p-value and the quantities informed by the prior alone;
- ``figures``: the names (without ``.pdf``) of the figure PDFs present in the figures folder,
  so that the manuscript shows only figures that were built.

Usage: ``python -m analysis.numbers RESULTS_DIR COHORT_CSV OUTPUT_JSON [--figures DIR]``
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import click
import pandas as pd

from analysis.frequentist import relative_loss, study_findings, subject_measures
from models.data import load_cohort

SIMULATED_NOTE = (
    "The cohort is SIMULATED with the design of Kimura et al. 2016; its individual data are "
    "not public. No number here is a finding of the study."
)
#: The configuration the bundled cohort was drawn with (``cd49d simulate-cohort``'s default).
DEFAULT_COHORT_CONFIG = Path(
    str(resources.files("simulations") / "configs" / "kimura2016_cohort.toml")
)
#: Parameters of the cohort configuration quoted by the manuscript.
SIMULATION_PARAMETERS = (
    "kappa",
    "sigma",
    "tau_subject",
    "tau_subject_subset",
    "saturation_mean",
    "saturation_sd",
    "exacerbation_intercept",
    "exacerbation_log_or",
)


def read_csv(path: Path) -> pd.DataFrame:
    """A result CSV as written (the scenario ``null`` is a name, not a missing value)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def clean(value):
    """JSON-safe scalars: NaN becomes None, numpy scalars plain Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def nested(frame: pd.DataFrame, keys: list[str], fields: dict[str, str]) -> dict:
    """``{key1: {key2: ... {field: value}}}`` from the rows of ``frame``; a key that is empty
    in a row (an estimand without a group, say) adds no level."""
    out: dict = {}
    for row in frame.to_dict("records"):
        node = out
        for key in keys:
            value = clean(row[key])
            if value not in (None, ""):
                node = node.setdefault(str(value), {})
        node.update({name: clean(row[column]) for name, column in fields.items()})
    return out


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows of ``frame`` in order, as JSON-safe dicts with the frame's column names."""
    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def extreme(table: pd.DataFrame, column: str, *, largest: bool = False) -> dict:
    """The row where ``column`` (by absolute value when ``largest``) is smallest or largest,
    as a dict; empty when the column has no values."""
    values = table[column].dropna()
    if values.empty:
        return {}
    index = values.abs().idxmax() if largest else values.idxmin()
    return table.loc[index].to_dict()


def whole(value):
    """A sample size as an integer (None stays None)."""
    return None if value is None else int(value)


def as_flag(series: pd.Series) -> pd.Series:
    """A CSV column of True/False/blank as booleans with NA (pandas reads it as text or bool)."""
    mapping = {"true": True, "false": False}
    return series.map(lambda v: mapping.get(str(v).strip().lower(), pd.NA)).astype("boolean")


def per_model(folder: Path, name: str, read: Callable[[pd.DataFrame], object]) -> dict:
    """``{model: read(table)}`` for every ``folder/MODEL/name``."""
    return {path.parent.name: read(read_csv(path)) for path in sorted(folder.glob(f"*/{name}"))}


def simulation_numbers(config: Path) -> dict:
    """The values the cohort was drawn with: inputs of the simulation, not results."""
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    parameters = raw.get("parameters", {})
    design = raw.get("design", {})
    out = {
        "config": config.name,
        "seed": raw.get("seed"),
        "candidate_draws": raw.get("candidate_draws"),
        "exacerbations": design.get("exacerbations"),
    }
    for name in SIMULATION_PARAMETERS:
        if name in parameters:
            out[name] = parameters[name]["value"]
    if "baseline_positive_rate" in parameters:
        out["baseline_positive_rate"] = parameters["baseline_positive_rate"]["value"]
    return out


def cohort_numbers(cohort_csv: Path, config: Path | None = None) -> dict:
    frame = pd.read_csv(cohort_csv)
    subjects = frame.drop_duplicates("subject_id")
    out = {
        "subjects": len(subjects),
        "by_group": {g: int(n) for g, n in subjects["group"].value_counts().sort_index().items()},
        "simulated_note": SIMULATED_NOTE,
    }
    loaded = load_cohort(cohort_csv)
    out["findings"] = study_findings(loaded)
    out["relative_loss"] = {
        str(k): clean(v) for k, v in relative_loss(subject_measures(loaded)).items()
    }
    if config is not None and config.exists():
        out["simulation"] = simulation_numbers(config)
    return out


def frequentist_numbers(path: Path) -> dict:
    tests = read_csv(path)
    tests = tests[tests["analysis"] != "descriptive"]
    fields = {
        "statistic": "statistic",
        "p_value": "p_value",
        "method": "method",
        "n": "n",
        "n_other": "n_other",
        "min_attainable_p": "min_attainable_p",
    }
    return nested(tests, ["analysis", "quantity", "subset"], fields)


def descriptive_numbers(path: Path) -> dict:
    table = read_csv(path)
    table = table[table["analysis"] == "descriptive"]
    fields = {"n": "n", "median": "median", "q25": "q25", "q75": "q75"}
    return nested(table, ["quantity", "subset", "group"], fields)


def fit_numbers(fits_dir: Path) -> dict:
    fields = {"mean": "mean", "sd": "sd", "low": "q2.5", "high": "q97.5"}
    return per_model(
        fits_dir, "estimands.csv", lambda t: nested(t, ["estimand", "group", "subset"], fields)
    )


def diagnostics_summary(table: pd.DataFrame) -> dict:
    return {
        "parameters": len(table),
        "rhat_max": clean(table["rhat"].max()),
        "ess_bulk_min": clean(table["ess_bulk"].min()),
        "ess_tail_min": clean(table["ess_tail"].min()),
    }


def diagnostics_numbers(fits_dir: Path) -> dict:
    return per_model(fits_dir, "diagnostics.csv", diagnostics_summary)


def identification_numbers(fits_dir: Path) -> dict:
    fields = {
        "prior_sd": "prior_sd",
        "posterior_sd": "posterior_sd",
        "contraction": "contraction",
        "informed_by": "informed_by",
    }
    return per_model(fits_dir, "identification.csv", lambda t: nested(t, ["parameter"], fields))


def prior_sensitivity_numbers(fits_dir: Path) -> dict:
    return per_model(fits_dir, "prior_sensitivity.csv", records)


def assumption_sensitivity_numbers(fits_dir: Path) -> dict:
    return per_model(fits_dir, "assumption_sensitivity.csv", records)


def mfi_comparison_numbers(path: Path) -> list[dict]:
    return records(read_csv(path))


#: A posterior predictive p-value below this is counted as a cell the model rarely reproduces.
PPC_FLAG = 0.05


def ppc_summary(table: pd.DataFrame) -> dict:
    """The new-subject check of one fit: cells checked, those with p below ``PPC_FLAG`` and
    the smallest p with its cell."""
    smallest = extreme(table, "p_value")
    flagged = table[table["p_value"] < PPC_FLAG]
    return {
        "checks": len(table),
        "below_flag": len(flagged),
        "flag": PPC_FLAG,
        "flagged": records(flagged[["group", "subset", "statistic", "observed", "p_value"]]),
        "smallest_p": clean(smallest.get("p_value")),
        "smallest_p_cell": {k: clean(smallest.get(k)) for k in ("group", "subset", "statistic")},
    }


def ppc_numbers(fits_dir: Path) -> dict:
    return per_model(fits_dir, "ppc_new_subjects.csv", ppc_summary)


def loo_numbers(path: Path) -> dict:
    table = read_csv(path)
    fields = {
        "elpd": "elpd",
        "se": "se",
        "elpd_diff": "elpd_diff",
        "dse": "dse",
        "weight": "weight",
        "pareto_k_above_0_7": "n_pareto_k_above_0.7",
    }
    return nested(table, ["model"], fields)


def crossval_numbers(path: Path) -> dict:
    table = read_csv(path)
    fields = {column: column for column in table.columns if column != "model"}
    return nested(table, ["model"], fields)


#: Sample-size fields that are whole numbers of patients.
WHOLE_FIELDS = ("n", "low", "high", "n_min_grid", "n_max_grid")


def sample_size_plan(table: pd.DataFrame) -> dict:
    """One plan's ``sample_size.csv`` as ``{endpoint: {analysis: {target: cell}}}``."""
    table = table.assign(target=table["target_power"].map(lambda p: f"{p:g}"))
    fields = {
        "n": "n_required",
        "low": "n_low",
        "high": "n_high",
        "n_real": "n_real",
        "status": "status",
        "note": "note",
        "n_min_grid": "n_min_grid",
        "n_max_grid": "n_max_grid",
    }
    plan = nested(table, ["endpoint", "analysis", "target"], fields)
    for analyses in plan.values():
        for targets in analyses.values():
            for cell in targets.values():
                cell.update({k: whole(cell[k]) for k in WHOLE_FIELDS})
    return plan


def power_numbers(power_dir: Path) -> dict:
    return per_model(power_dir, "sample_size.csv", sample_size_plan)


def power_run_summary(table: pd.DataFrame) -> dict:
    """What a plan's run simulated: its grid, replicates per cell, analyses and failures."""
    alternative = table[table["scenario"].eq("alternative")]
    return {
        "n_grid": sorted(int(n) for n in alternative["n"].unique()),
        "replicates_per_cell": int(alternative["n_reps"].max()),
        "endpoints": sorted(alternative["endpoint"].astype(str).unique()),
        "analyses": sorted(alternative["analysis"].astype(str).unique()),
        "scenarios": sorted(table["scenario"].astype(str).unique()),
        "analyses_run": int(table["n_reps"].sum()),
        "analyses_failed": int(table["n_failed"].sum()),
    }


def plan_settings(manifest: Path) -> dict:
    """A run's plan as its ``manifest.json`` stored it: the question, design, assumed effect
    (the keys the plan set), one-sided level and Bayesian model. Inputs, not results."""
    plan = json.loads(manifest.read_text(encoding="utf-8"))["plan"]
    trial, analysis = plan["trial"], plan["analysis"]
    effect = {
        key: value
        for key, value in plan["effect"].items()
        if value is not None and key not in ("source", "cohort_config")
    }
    return {
        "question": plan["question"],
        "design": trial["design"],
        "description": plan.get("description", ""),
        "effect": effect,
        "allocation": trial.get("allocation"),
        "follow_up_months": trial.get("follow_up_months"),
        "exacerbation_probability_per_year": trial.get("exacerbation_probability_per_year"),
        "one_sided_alpha": analysis["one_sided_alpha"],
        "bayes_model": analysis["bayesian"]["model"],
    }


def power_run_numbers(power_dir: Path) -> dict:
    out = {}
    for path in sorted(power_dir.glob("*/power.csv")):
        run = power_run_summary(read_csv(path))
        manifest = path.parent / "manifest.json"
        if manifest.exists():
            run["plan"] = plan_settings(manifest)
        out[path.parent.name] = run
    return out


def performance_summary(table: pd.DataFrame) -> dict:
    """Per analysis of the alternative scenario: the range of coverage and the largest |bias|
    over cells, each with its Monte Carlo SE."""
    table = table[table["scenario"].eq("alternative")]
    out = {}
    for analysis, rows in table.groupby("analysis", sort=True):
        cell: dict = {"cells": len(rows)}
        if low := extreme(rows, "coverage"):
            cell.update(
                coverage_min=clean(low["coverage"]),
                coverage_min_mcse=clean(low["coverage_mcse"]),
                coverage_max=clean(rows["coverage"].max()),
                coverage_mean=clean(rows["coverage"].mean()),
            )
        if worst := extreme(rows, "bias", largest=True):
            cell.update(
                bias_largest=clean(worst["bias"]),
                bias_largest_mcse=clean(worst["bias_mcse"]),
                bias_largest_endpoint=str(worst["endpoint"]),
                bias_largest_n=int(worst["n"]),
            )
        out[str(analysis)] = cell
    return out


def performance_numbers(power_dir: Path) -> dict:
    return per_model(power_dir, "performance.csv", performance_summary)


def pooled_rejections(null: pd.DataFrame) -> dict:
    """Rejections and analysed trials per null scenario and analysis, over n and endpoints."""
    null = null[null["nominal_level"].notna() & null["rejection_rate"].notna()]
    analysed = null["n_reps"] - null["n_failed"]
    null = null.assign(
        trials=analysed, rejections=(null["rejection_rate"] * analysed).round().astype(int)
    )
    out: dict = {}
    for (scenario, analysis), rows in null.groupby(["scenario", "analysis"], sort=True):
        trials, rejections = int(rows["trials"].sum()), int(rows["rejections"].sum())
        out.setdefault(str(scenario), {})[str(analysis)] = {
            "rejections": rejections,
            "trials": trials,
            "rate": rejections / trials if trials else None,
            "nominal_level": clean(rows["nominal_level"].iloc[0]),
        }
    return out


def type_i_summary(table: pd.DataFrame) -> dict:
    within = as_flag(table["within_3_mcse"])
    familywise = as_flag(table["within_familywise"])
    flagged = table[familywise.eq(False).fillna(False).to_numpy()]
    shown = ["scenario", "endpoint", "analysis", "n", "rejection_rate", "n_reps", "nominal_level"]
    return {
        "checked": int(within.notna().sum()),
        "outside_3_mcse": int(within.eq(False).sum()),
        "outside_familywise": int(familywise.eq(False).sum()),
        "familywise_mcse": clean(table["familywise_mcse"].dropna().max()),
        "flagged": records(flagged[shown]),
        "pooled": pooled_rejections(table),
    }


def type_i_numbers(power_dir: Path) -> dict:
    return per_model(power_dir, "type_i_error.csv", type_i_summary)


def sample_size_validation_numbers(path: Path) -> dict:
    table = read_csv(path)
    out: dict = {}
    for (curve, m), rows in table.groupby(["curve", "m"], sort=True):
        low = extreme(rows, "coverage")
        worst = extreme(rows, "relative_error", largest=True)
        out.setdefault(str(curve), {})[str(int(m))] = {
            "scenarios": len(rows),
            "passed": int(as_flag(rows["passed"]).sum()),
            "runs": int(rows["runs"].max()),
            "lowest_coverage": clean(low.get("coverage")),
            "lowest_coverage_mcse": clean(low.get("coverage_mcse")),
            "largest_relative_error": clean(worst.get("relative_error")),
            "largest_relative_error_mcse": clean(worst.get("relative_error_mcse")),
        }
    return out


def sbc_summary(table: pd.DataFrame) -> dict:
    smallest = extreme(table, "p_value")
    return {
        "replicates": int(table["replicates"].max()),
        "failed_fits": int(table["failed_fits"].max()),
        "quantities": len(table),
        "outside_band": int((~as_flag(table["within_95_band"]).fillna(True)).sum()),
        "passes": bool(as_flag(table["passes"]).fillna(False).all()),
        "smallest_p": clean(smallest.get("p_value")),
        "smallest_p_quantity": clean(smallest.get("quantity")),
        "prior_only": sorted(table.loc[table["informed_by"].eq("prior"), "quantity"].astype(str)),
    }


def sbc_numbers(sbc_dir: Path) -> dict:
    return per_model(sbc_dir, "sbc_summary.csv", sbc_summary)


def figure_names(figures_dir: Path) -> list[str]:
    """The figure PDFs present, by name without ``.pdf``, sorted."""
    return sorted(path.stem for path in figures_dir.glob("*.pdf")) if figures_dir.is_dir() else []


def gather(
    results: Path,
    cohort_csv: Path,
    *,
    figures_dir: Path | None = None,
    cohort_config: Path | None = DEFAULT_COHORT_CONFIG,
) -> dict:
    """Every section whose result files exist under ``results``.

    Parameters
    ----------
    results
        The results folder (``frequentist/``, ``fits/``, ``power/``, ``sbc/``, ...).
    cohort_csv
        The cohort every fit was made on.
    figures_dir
        The figures folder; when given, ``figures`` lists the PDFs in it (empty if none).
    cohort_config
        The configuration the cohort was drawn with (default: the bundled cohort's); None
        leaves ``cohort.simulation`` out.

    Returns
    -------
    dict
        The sections listed in the module docstring; JSON-safe (no NaN).
    """
    numbers: dict = {"cohort": cohort_numbers(cohort_csv, cohort_config)}
    frequentist = results / "frequentist" / "frequentist.csv"
    sections = {
        "frequentist": (frequentist, frequentist_numbers),
        "descriptive": (frequentist, descriptive_numbers),
        "fits": (results / "fits", fit_numbers),
        "diagnostics": (results / "fits", diagnostics_numbers),
        "identification": (results / "fits", identification_numbers),
        "prior_sensitivity": (results / "fits", prior_sensitivity_numbers),
        "assumption_sensitivity": (results / "fits", assumption_sensitivity_numbers),
        "mfi_comparison": (results / "mfi" / "mfi_comparison.csv", mfi_comparison_numbers),
        "ppc_new_subjects": (results / "fits", ppc_numbers),
        "loo": (results / "fits" / "loo_kappa.csv", loo_numbers),
        "crossval": (results / "crossval" / "kfold_compare.csv", crossval_numbers),
        "power": (results / "power", power_numbers),
        "power_runs": (results / "power", power_run_numbers),
        "performance": (results / "power", performance_numbers),
        "type_i_error": (results / "power", type_i_numbers),
        "sample_size_validation": (
            results / "sample_size_validation.csv",
            sample_size_validation_numbers,
        ),
        "sbc": (results / "sbc", sbc_numbers),
    }
    for name, (path, read) in sections.items():
        if path.exists() and (value := read(path)):
            numbers[name] = value
    if figures_dir is not None:
        numbers["figures"] = figure_names(figures_dir)
    return numbers


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("cohort", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--figures",
    "figures_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="figures folder (default: ../figures beside OUTPUT's folder, i.e. paper/figures).",
)
def main(results: Path, cohort: Path, output: Path, figures_dir: Path | None) -> None:
    """Gather the numbers the manuscript quotes from RESULTS into OUTPUT (JSON)."""
    figures_dir = figures_dir or output.parent.parent / "figures"
    numbers = gather(results, cohort, figures_dir=figures_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".json.tmp")
    temporary.write_text(
        json.dumps(numbers, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
    )
    temporary.replace(output)


if __name__ == "__main__":
    main()
