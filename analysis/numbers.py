"""Every number the manuscript quotes, gathered from the result files into one JSON.

The manuscript (``paper/manuscript.typ``) reads ``numbers.json`` and types no result by hand.
This script only reads result files; it never fits or simulates. Sections, each present only
when its result files are:

- ``cohort``: subjects per group and the SIMULATED flag (the cohort's ``source`` note);
- ``frequentist``: the study's tests, ``{analysis: {quantity: {subset: {statistic, p_value,
  method}}}}``, from ``frequentist/frequentist.csv``;
- ``fits``: each model's estimands, ``{model: {estimand: {group: {subset: {mean, sd, low,
  high}}}}}`` (95% equal-tailed intervals), from ``fits/MODEL/estimands.csv``;
- ``loo``: ``{model: {elpd, se, elpd_diff, dse, weight, pareto_k_above_0_7}}``;
- ``power``: each plan's sample sizes, ``{plan: {endpoint: {analysis: {"0.8": {n, low, high,
  status}}}}}``, from ``power/PLAN/sample_size.csv``;
- ``sbc``: per model, replicates, failed fits and quantities outside the 95% band.

Usage: ``python -m analysis.numbers RESULTS_DIR COHORT_CSV OUTPUT_JSON``
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import pandas as pd

SIMULATED_NOTE = (
    "The cohort is SIMULATED with the design of Kimura et al. 2016; its individual data are "
    "not public. No number here is a finding of the study."
)


def read_csv(path: Path) -> pd.DataFrame:
    """A result CSV as written (the scenario ``null`` is a name, not a missing value)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def clean(value):
    """JSON-safe scalars: NaN becomes None, numpy scalars plain Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


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


def whole(value):
    """A sample size as an integer (None stays None)."""
    return None if value is None else int(value)


def cohort_numbers(cohort_csv: Path) -> dict:
    frame = pd.read_csv(cohort_csv)
    subjects = frame.drop_duplicates("subject_id")
    return {
        "subjects": len(subjects),
        "by_group": {g: int(n) for g, n in subjects["group"].value_counts().sort_index().items()},
        "simulated_note": SIMULATED_NOTE,
    }


def frequentist_numbers(path: Path) -> dict:
    tests = read_csv(path)
    tests = tests[tests["analysis"] != "descriptive"]
    fields = {"statistic": "statistic", "p_value": "p_value", "method": "method"}
    return nested(tests, ["analysis", "quantity", "subset"], fields)


def fit_numbers(fits_dir: Path) -> dict:
    out = {}
    for path in sorted(fits_dir.glob("*/estimands.csv")):
        table = read_csv(path)
        fields = {"mean": "mean", "sd": "sd", "low": "q2.5", "high": "q97.5"}
        out[path.parent.name] = nested(table, ["estimand", "group", "subset"], fields)
    return out


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


def power_numbers(power_dir: Path) -> dict:
    out = {}
    for path in sorted(power_dir.glob("*/sample_size.csv")):
        table = read_csv(path)
        table["target"] = table["target_power"].map(lambda p: f"{p:g}")
        fields = {"n": "n_required", "low": "n_low", "high": "n_high", "status": "status"}
        plan = nested(table, ["endpoint", "analysis", "target"], fields)
        for analyses in plan.values():
            for targets in analyses.values():
                for cell in targets.values():
                    cell.update({k: whole(cell[k]) for k in ("n", "low", "high")})
        out[path.parent.name] = plan
    return out


def sbc_numbers(sbc_dir: Path) -> dict:
    out = {}
    for path in sorted(sbc_dir.glob("*/sbc_summary.csv")):
        table = read_csv(path)
        out[path.parent.name] = {
            "replicates": int(table["replicates"].max()),
            "failed_fits": int(table["failed_fits"].max()),
            "quantities": len(table),
            "outside_band": int((~table["within_95_band"].astype(bool)).sum()),
            "passes": bool(table["passes"].astype(bool).all()),
        }
    return out


def gather(results: Path, cohort_csv: Path) -> dict:
    """Every section whose result files exist under ``results``."""
    numbers = {"cohort": cohort_numbers(cohort_csv)}
    sections = {
        "frequentist": (results / "frequentist" / "frequentist.csv", frequentist_numbers),
        "fits": (results / "fits", fit_numbers),
        "loo": (results / "fits" / "loo_kappa.csv", loo_numbers),
        "power": (results / "power", power_numbers),
        "sbc": (results / "sbc", sbc_numbers),
    }
    for name, (path, read) in sections.items():
        if path.exists():
            numbers[name] = read(path)
    return numbers


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("cohort", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def main(results: Path, cohort: Path, output: Path) -> None:
    """Gather the numbers the manuscript quotes from RESULTS into OUTPUT (JSON)."""
    numbers = gather(results, cohort)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(output)


if __name__ == "__main__":
    main()
