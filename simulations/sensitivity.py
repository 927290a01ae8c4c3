"""How the n for a target power depends on the plan's assumptions (``cd49d power --vary``).

Each assumption is an ``[effect]`` parameter of the plan, in natural units (``VARIABLE``); each
of its values gives a variant of the plan with only that parameter changed and no null run (the
type-I error does not depend on the alternative's size), run through the same engine into its
own folder ``OUT/sensitivity/NAME=VALUE/`` (resumable like any run), and read off by the same
sample-size method (``simulations.sample_size``). One assumption is changed at a time, the others
kept at the plan's values. ``sample_size_sensitivity.csv``: ``assumption, value, plan_value``
(the value the plan itself runs at, from the plan or the cohort configuration), then the
columns of ``sample_size.csv``; the plan's own run is included as the row at ``plan_value``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from simulations.plan import Plan, PlanError, describe
from simulations.sample_size import SAMPLE_SIZE_COLUMNS
from simulations.trials import cohort_config

#: Assumptions that can be varied, each an ``[effect]`` key, with what it is.
VARIABLE = {
    "kappa": "detectable CD49d lost per unit occupancy (one kappa for every subset)",
    "saturation_mean": "mean receptor occupancy under natalizumab",
    "saturation_sd": "between-patient SD of occupancy",
    "tau_subject": "between-subject SD of log CD49d location",
    "tau_subject_subset": "subject x subset SD of log CD49d location",
    "visit_sd": "sample x subset (visit) SD of log CD49d location, paired design",
    "events_per_gate_scale": "factor on the configuration's median events per gate",
    "exacerbation_log_or": "log odds ratio of an exacerbation per SD of the latent log ratio",
}
SENSITIVITY_COLUMNS = ["assumption", "value", "plan_value", *SAMPLE_SIZE_COLUMNS]


def parse_vary(text: str) -> tuple[str, list[float]]:
    """``NAME=V1,V2,...`` as ``(name, values)``.

    Raises
    ------
    ValueError
        Naming what is wrong: no ``=``, an unknown name (with the known ones), a value that is
        not a number, or no value.
    """
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep:
        raise ValueError(f"--vary {text!r}: expected NAME=V1,V2,... (e.g. kappa=0.3,0.5)")
    if name not in VARIABLE:
        raise ValueError(f"--vary: unknown assumption {name!r} (known: {', '.join(VARIABLE)})")
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"--vary {name}: values must be numbers, got {values!r}") from err
    if not numbers:
        raise ValueError(f"--vary {name}: no values given")
    return name, numbers


def variations(plan: Plan, extra: list[tuple[str, list[float]]]) -> dict[str, list[float]]:
    """The plan's ``[sensitivity]`` table with the command line's ``--vary`` added, every
    variant checked (a ``PlanError`` names an impossible value before anything runs)."""
    table = {name: list(values) for name, values in plan.sensitivity.items()}
    for name, values in extra:
        table[name] = values
    unknown = sorted(set(table) - set(VARIABLE))
    if unknown:
        raise ValueError(f"sensitivity: unknown assumption(s) {', '.join(unknown)}")
    if plan.question == "mechanism" and "kappa" in table:
        raise ValueError(
            "sensitivity: the mechanism question's kappa is its null (one kappa for every "
            "subset); vary effect.kappa_by_subset in the plan file instead"
        )
    if "visit_sd" in table and plan.trial.design != "paired":
        raise ValueError(
            f"sensitivity: visit_sd is the variation between a patient's repeated samples; the "
            f"{plan.trial.design} design has one sample per patient (its subject x subset SD, "
            f"tau_subject_subset, holds that variation)"
        )
    for name, values in table.items():
        for value in values:
            variant(plan, name, value)
    return table


def plan_value(plan: Plan, name: str) -> float:
    """The value the plan runs at: its own ``[effect]`` entry, else the configuration's."""
    own = getattr(plan.effect, name)
    if own is not None:
        return float(own)
    if name == "events_per_gate_scale":
        return 1.0
    return float(cohort_config(plan).parameters[name])


def variant(plan: Plan, name: str, value: float) -> Plan:
    """The plan with one assumption changed, no null run and no sensitivity table.

    Raises
    ------
    PlanError
        ``NAME=VALUE: section.key: what is wrong`` where the value is impossible.
    """
    raw = plan.model_dump()
    raw["effect"][name] = value
    raw["replicates"]["null"] = 0
    raw["sensitivity"] = {}
    raw["name"] = f"{plan.name} ({name}={value:g})"
    try:
        return Plan.model_validate(raw)
    except ValidationError as err:
        raise PlanError([f"{name}={value:g}: {describe(e)}" for e in err.errors()]) from err


def variant_folder(out: Path | str, name: str, value: float) -> Path:
    return Path(out) / "sensitivity" / f"{name}={value:g}"


def sensitivity_rows(name: str, value: float, baseline: float, sizes: pd.DataFrame) -> pd.DataFrame:
    """One variant's sample-size rows with its assumption, value and the plan's value."""
    return sizes.assign(assumption=name, value=value, plan_value=baseline)[SENSITIVITY_COLUMNS]


def sensitivity_table(
    plan: Plan, base: pd.DataFrame, runs: dict, table: dict[str, list[float]]
) -> pd.DataFrame:
    """``sample_size_sensitivity.csv``: every variant's rows, and the plan's own at its value.

    ``runs`` maps ``(name, value)`` to that variant's sample-size table (values equal to the
    plan's are not run: ``base``, the plan's own table, stands for them).
    """
    frames = []
    for name, values in table.items():
        baseline = plan_value(plan, name)
        for value in sorted(set(values) | {baseline}):
            sizes = base if np.isclose(value, baseline) else runs[(name, value)]
            frames.append(sensitivity_rows(name, value, baseline, sizes))
    if not frames:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def run_sensitivity(
    plan: Plan, out: Path | str, table: dict[str, list[float]], base: pd.DataFrame, run, **kwargs
) -> pd.DataFrame:
    """Run every variant of ``table`` with ``run(plan, folder, **kwargs)`` (returning outputs
    with a ``sample_size`` table) and return ``sample_size_sensitivity``'s rows."""
    runs = {}
    for name, values in table.items():
        baseline = plan_value(plan, name)
        for value in values:
            if not np.isclose(value, baseline):
                folder = variant_folder(out, name, value)
                runs[(name, value)] = run(variant(plan, name, value), folder, **kwargs).sample_size
    return sensitivity_table(plan, base, runs, table)
