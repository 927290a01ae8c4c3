"""A whole power study: run a plan through the engine, then summarise its records.

Outputs under ``--out`` (documented in README.md, "Planning a study"):

- ``records/``, ``manifest.json`` (and ``datasets/``): see ``simulations.store``; the manifest
  also holds the plan's effect on the observable scale (``simulations.observable``);
- ``records.parquet``: every replicate's rows in one file (engine order, sorted);
- ``power.csv``: power per (design, scenario, endpoint, analysis, n) with MCSE and Wilson
  interval, among converged analyses and with failures counted as non-successes (``*_all``);
- ``type_i_error.csv``: each null scenario's rejection rates next to the nominal levels;
- ``sample_size.csv``: the n reaching 80% and 90% power, with an interval, read off each power
  curve by ``simulations.sample_size`` (validated in ``simulations.sample_size_validation``);
- ``performance.csv``: bias, empirical SE, model SE and interval coverage of each analysis's
  estimate against the scenario's true estimand value, with Monte Carlo SEs
  (``simulations.summarise.performance_table``).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from simulations.atomic import write_atomically
from simulations.cohort import DEFAULT_CONFIG
from simulations.digests import code_digest, file_digest
from simulations.engine import RunContext, Study, run_rounds
from simulations.observable import estimand_truths, observable_effect
from simulations.plan import Plan
from simulations.sample_size import sample_size_table
from simulations.store import Store
from simulations.summarise import performance_table, power_table, type_i_table
from simulations.trials import DesignPrior


@dataclass(frozen=True)
class PowerOutputs:
    records: pd.DataFrame
    power: pd.DataFrame
    type_i: pd.DataFrame
    sample_size: pd.DataFrame
    performance: pd.DataFrame
    #: What differed in the stale results that ``--replace-stale`` deleted (empty: none).
    replaced: tuple[str, ...] = ()


#: What a run writes beside its records: deleted with them when stale results are replaced.
DERIVED_OUTPUTS = (
    "records.parquet",
    "power.csv",
    "type_i_error.csv",
    "sample_size.csv",
    "performance.csv",
    "power_curve.png",
    "sample_size_sensitivity.csv",
    "sample_size_sensitivity.png",
    "sensitivity",
)


def input_digests(plan: Plan) -> dict[str, str]:
    """Digests of what decides a replicate besides the plan itself: the cohort configuration
    file's contents and the code (the design prior enters the result hash)."""
    config = Path(plan.effect.cohort_config) if plan.effect.cohort_config else DEFAULT_CONFIG
    return {
        "cohort_config": file_digest(config),
        "cohort_config_path": str(config),
        "code": code_digest(),
    }


def manifest(
    plan: Plan, result_hash: str, design_prior: str | None, observable: dict | None = None
) -> dict:
    versions = {name: metadata.version(name) for name in ("pymc", "nutpie", "numpy", "scipy")}
    versions["statsmodels"] = metadata.version("statsmodels")
    return {
        "plan": plan.model_dump(mode="json"),
        "inputs": input_digests(plan),
        "observable_effect": (
            observable
            if observable is not None
            else observable_effect(plan, design_prior=design_prior is not None)
        ),
        "result_hash": result_hash,
        "design_prior": design_prior,
        "design_prior_sha256": file_digest(design_prior),
        "python": platform.python_version(),
        "versions": versions,
        "note": "simulated trials: no number here is a measurement of any study",
    }


def run_plan(
    plan: Plan,
    out: Path | str,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    design_prior: Path | str | None = None,
    save_datasets: bool = False,
    progress: bool = True,
    observable: dict | None = None,
    study: Study | None = None,
    replace_stale: bool = False,
) -> PowerOutputs:
    """Run (or resume) a plan and write its records and summary tables under ``out``.

    ``observable``: the plan's ``simulations.observable.observable_effect`` if already computed
    (it is stored in the manifest). ``study``: the Generate and Analyse functions
    (``simulations.engine.Study``; default the package's own, ``POWER_STUDY``).
    ``replace_stale``: delete the results of a folder made from other inputs and start afresh
    (``PowerOutputs.replaced`` says what had changed) instead of refusing it.

    Raises
    ------
    simulations.store.StoreMismatch
        If ``out`` holds another plan's results and ``replace_stale`` is false (nothing is run
        or written).
    ValueError
        If the design prior lacks a generating parameter, or the plan asks the mechanism
        question, whose per-subset kappa a fit of the shared-kappa models cannot give
        (nothing is written).
    """
    prior = str(design_prior) if design_prior is not None else None
    if prior is not None and plan.question == "mechanism":
        raise ValueError(
            "a design prior is not supported for the mechanism question: its scenarios set "
            "kappa per subset (effect.kappa, effect.kappa_by_subset)"
        )
    if prior is not None:
        DesignPrior(prior)  # refuse an unusable fit before anything is written
    result_hash = plan.result_hash(file_digest(prior))
    store = Store(out, result_hash, DERIVED_OUTPUTS)
    replaced = store.open(
        manifest(plan, result_hash, prior, observable), replace_stale=replace_stale
    )
    context = RunContext(plan, str(out), result_hash, prior, save_datasets, study)
    records = run_rounds(context, workers=workers, scheduler=scheduler, progress=progress)
    records = records[records["n"].isin(plan.trial.n)].reset_index(drop=True)  # this grid's
    store.remove_temporaries()
    outputs = summarise_records(records, truths_for(plan, design_prior=prior is not None))
    outputs = replace(outputs, sample_size=with_design_totals(outputs.sample_size, plan))
    write_outputs(outputs, Path(out))
    return replace(outputs, replaced=tuple(replaced))


#: What n counts, and what the design's total counts, by design.
TOTAL_OF = {
    "cross_sectional": "patients: n natalizumab-treated + round(n x allocation) natalizumab-naive",
    "paired": "patients, each sampled before and under natalizumab (2 samples each)",
    "prognostic": "natalizumab-treated patients followed up",
}


def design_total(plan: Plan, n: float) -> float:
    """The design's whole sample (patients) at ``n`` natalizumab-treated patients."""
    if pd.isna(n):
        return np.nan
    naive = round(n * plan.trial.allocation) if plan.trial.design == "cross_sectional" else 0
    return float(n + naive)


def with_design_totals(sizes: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """``sample_size.csv`` with what n counts (``n_counts``) and the design's total sample at
    ``n_required``, ``n_low`` and ``n_high`` (``total_required``, ``total_low``,
    ``total_high``; what they count: ``total_of``)."""
    sizes = sizes.copy()
    sizes["n_counts"] = "natalizumab-treated patients"
    for end in ("required", "low", "high"):
        sizes[f"total_{end}"] = [design_total(plan, n) for n in sizes[f"n_{end}"]]
    sizes["total_of"] = TOTAL_OF[plan.trial.design]
    return sizes


def truths_for(plan: Plan, *, design_prior: bool) -> pd.DataFrame:
    """Each scenario's true estimand values (``estimand_truths``); none under a design prior,
    whose parameters, and so the truth, vary by replicate."""
    columns = ["scenario", "endpoint", "family", "true_value", "true_value_of"]
    rows = [] if design_prior else estimand_truths(plan)
    return pd.DataFrame(rows, columns=columns)


def summarise_records(records: pd.DataFrame, truths: pd.DataFrame) -> PowerOutputs:
    power = power_table(records)
    return PowerOutputs(
        records,
        power,
        type_i_table(power),
        sample_size_table(power),
        performance_table(records, truths),
    )


def write_outputs(outputs: PowerOutputs, out: Path) -> None:
    outputs.records.to_parquet(out / "records.parquet", index=False)
    for name, table in (
        ("power.csv", outputs.power),
        ("type_i_error.csv", outputs.type_i),
        ("sample_size.csv", outputs.sample_size),
        ("performance.csv", outputs.performance),
    ):
        write_atomically(table.to_csv(index=False, lineterminator="\n"), out / name)


def describe_run(outputs: PowerOutputs) -> list[str]:
    """A few lines for the end of a run: replicates, failures, type-I check, sample sizes."""
    records = outputs.records
    failed = records[records["status"] != "ok"]
    reasons = failed["status"].value_counts().to_dict()
    lines = [
        f"{records['replicate'].groupby(records['cell_id']).nunique().sum()} replicates in "
        f"{records['cell_id'].nunique()} cells; failed analyses: "
        f"{len(failed)} of {len(records)} {json.dumps(reasons) if reasons else ''}".rstrip()
    ]
    type_i = outputs.type_i.dropna(subset=["nominal_level"])
    lines += type_i_summary(outputs.type_i)
    for row in type_i.itertuples():
        flag = "OUTSIDE 3 MCSE" if pd.notna(row.within_3_mcse) and not row.within_3_mcse else "ok"
        spread = (
            f"+- {row.mcse:.3f}"
            if pd.notna(row.mcse)
            else f"(Wilson 95% [{row.ci_low:.3f}, {row.ci_high:.3f}])"
        )
        lines.append(
            f"type-I error ({row.scenario}) {row.endpoint} {row.analysis} n={row.n}: "
            f"{row.rejection_rate:.3f} "
            f"{spread} (nominal {row.nominal_level:.3f}, {flag})"
        )
    for row in outputs.sample_size[outputs.sample_size["target_power"] == 0.8].itertuples():
        lines.append(f"80% power {row.endpoint} {row.analysis}: {sample_size_text(row)}")
    sizes = outputs.sample_size
    if "total_of" in sizes and len(sizes) and sizes["total_required"].notna().any():
        lines.append(
            "n counts natalizumab-treated patients; the design's total at n "
            f"(sample_size.csv, total_required): {sizes['total_of'].iloc[0]}"
        )
    return lines


def sample_size_text(row) -> str:
    """``n = 18 [16, 20]`` for a sample-size row; an open end as ``< n_min`` or ``> n_max``."""
    if row.status == "beyond_grid":
        return f"not reached by n = {row.n_max_grid} (beyond the grid)"
    if row.status == "not_estimable":
        return "not estimable"
    low = f"{row.n_low:.0f}" if pd.notna(row.n_low) else f"< {row.n_min_grid}"
    high = f"{row.n_high:.0f}" if pd.notna(row.n_high) else f"> {row.n_max_grid}"
    point = (
        f"n <= {row.n_required:.0f}" if row.status == "below_grid" else f"n = {row.n_required:.0f}"
    )
    status = "" if row.status == "ok" else f" ({row.status})"
    total = getattr(row, "total_required", np.nan)
    whole = f", {total:.0f} patients in all" if pd.notna(total) and total != row.n_required else ""
    return f"{point} [{low}, {high}]{status}{whole}"


def type_i_summary(type_i: pd.DataFrame) -> list[str]:
    """How many null cells were checked, and how many fall outside each tolerance."""
    judged = type_i.dropna(subset=["within_familywise"])
    if judged.empty:
        return []
    outside_3 = int((~judged["within_3_mcse"].astype(bool)).sum())
    outside_fw = int((~judged["within_familywise"].astype(bool)).sum())
    z = float(judged["familywise_mcse"].iloc[0])
    verdict = "ok" if outside_fw == 0 else "TYPE-I ERROR NOT NOMINAL"
    return [
        f"type-I error: {len(judged)} null cells checked; {outside_3} outside 3 MCSE; "
        f"{outside_fw} outside the family-wise tolerance ({z:.2f} MCSE, Bonferroni over "
        f"{len(judged)} cells at 5%): {verdict}"
    ]
