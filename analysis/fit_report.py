"""``cd49d fit``: fit one model to a cohort and write the fit, its estimands and its checks.

Outputs in the output folder (README.md, 'Outputs of cd49d fit'):
``fit.nc``, ``estimands.csv``, ``diagnostics.csv``, ``identification.csv``,
``power_scaling.csv``, ``predictive_checks.csv``, ``ppc_prior.png``, ``ppc_posterior.png``,
``ppc_new_subjects.csv``, for saturation models ``prior_sensitivity.csv`` and, for the model with
per-subset kappa, ``assumption_sensitivity.csv``. A fit that fails the diagnostics gate writes
only ``diagnostics.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd

from analysis.absent import absent_note, estimand_rows, parameter_rows
from analysis.predictive_checks import (
    new_subject_check,
    new_subject_seed,
    predictive_check_figure,
)
from models.data import Cohort
from models.diagnostics import Thresholds
from models.estimands import estimand_table
from models.fit import FitResult, SamplerSettings, fit_gated
from models.registry import MODELS
from models.saturation import mfi_rows
from models.sensitivity import (
    global_variables,
    identification_table,
    identification_variables,
    power_scaling_table,
    prior_refit_table,
)
from simulations.atomic import replacing, write_atomically

ALTERNATIVE_PRIOR = "uniform_saturation"
#: Assumptions of the latent-expression model refitted as sensitivity analyses (prior sets of
#: ``models.registry``), with what each relaxes, for the models with per-subset kappa (whose
#: ``kappa_difference`` rests on them): ``assumption_sensitivity.csv``.
ASSUMPTIONS = {
    "per_subset_sigma": "one SD of log CD49d within a gate per subset, instead of one for all",
    "treated_offset": "treated patients' baseline location may differ from MS_naive "
    "(a Normal(0, 0.3) probit offset, the same in every subset), instead of none (no "
    "confounding)",
}
ASSUMPTION_MODELS = ("saturation_per_subset",)
#: Why a cohort with MFI gets no per_subset_sigma refit.
MFI_SIGMA_NOTE = "the cohort's MFI identifies sigma per subset, which the default fit already has"
ASSUMPTION_ESTIMANDS = ("reduction", "ratio_fold_change", "kappa_difference")
#: Draws and tuning steps per chain of the assumption refits: posterior means and SDs of a few
#: estimands need no more, and the gate (bulk and tail ESS >= 400) still applies.
ASSUMPTION_DRAWS = 1000


@dataclass(frozen=True)
class FitRequest:
    """What to fit and how."""

    model_name: str
    prior_set: str = "default"
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    seed: int = 2016
    sensitivity: bool = True


def run_fit(
    cohort: Cohort,
    request: FitRequest,
    out_dir: Path,
    *,
    provenance: dict,
    say: Callable[[str], None],
) -> FitResult:
    """Fit, gate, and write every output; returns the gated fit (``passed`` False: exit 3)."""
    spec = MODELS[request.model_name]
    spec.check(cohort)  # ValueError here or below: the cohort does not fit
    model = spec.build(cohort, request.prior_set)
    request = replace(request, settings=request.settings.for_cohort(cohort))
    say(f"fitting {spec.name} ({spec.description}) with {request.settings.sampler}")
    if has_mfi(cohort):
        say(mfi_message(cohort, spec.uses_saturation))
    if request.settings.mass_matrix == "low_rank":
        say(
            "samples share patients (patient_id): nutpie adapts a low-rank mass matrix, since "
            "each patient's effects tie the group means together"
        )
    removed = remove_previous_outputs(out_dir)
    if removed:
        say(f"removed the previous fit's outputs in {out_dir}: {', '.join(removed)}")
    result = fit_gated(lambda: model, request.settings, request.thresholds, seed=request.seed)
    write_csv(result.report.table, out_dir / "diagnostics.csv")
    if not result.passed:
        return result
    idata = result.idata
    idata.attrs.update(
        model=spec.name,
        prior_set=request.prior_set,
        seed=request.seed,
        sampler=request.settings.sampler,
        mass_matrix=request.settings.mass_matrix,
        target_accept=float(result.attempts[-1]),
        **flat_provenance(provenance),
    )
    say("writing estimands, identification, sensitivity and predictive checks")
    if note := absent_note(cohort):
        say(note)
    estimands = estimand_rows(estimand_table(idata["posterior"].to_dataset(), cohort.spec), cohort)
    names = global_variables(model)
    identification = identification_table(idata, identification_variables(model))
    identification = parameter_rows(identification, cohort)
    write_csv(estimands, out_dir / "estimands.csv")
    write_csv(identification, out_dir / "identification.csv")
    scaling = parameter_rows(power_scaling_table(model, idata, names), cohort)
    write_csv(scaling, out_dir / "power_scaling.csv")
    write_predictive_checks(idata, cohort, out_dir)
    check = new_subject_check(
        model, idata, cohort, seed=new_subject_seed(request.seed), model_name=spec.name
    )
    write_csv(parameter_rows(check, cohort, column="group"), out_dir / "ppc_new_subjects.csv")
    if request.sensitivity and spec.uses_saturation and request.prior_set == "default":
        say(f"refitting under the {ALTERNATIVE_PRIOR} prior for prior sensitivity")
        write_prior_sensitivity(cohort, request, estimands, out_dir)
    if request.sensitivity and spec.name in ASSUMPTION_MODELS and request.prior_set == "default":
        say(f"refitting without the assumptions {', '.join(ASSUMPTIONS)} (sensitivity)")
        table = assumption_sensitivity(cohort, request, estimands)
        write_csv(table, out_dir / "assumption_sensitivity.csv")
        say(assumption_summary(table))
    write_netcdf(idata, out_dir / "fit.nc")  # last: its presence means every output is current
    say(headline(estimands, identification))
    return result


def has_mfi(cohort: Cohort) -> bool:
    return bool(len(mfi_rows(cohort, observed=True)))


def mfi_message(cohort: Cohort, used: bool) -> str:
    """What the fit does with the cohort's MFI readings."""
    count = len(mfi_rows(cohort, observed=True))
    if not used:
        return f"{count} rows carry MFI; this model does not use it (the saturation models do)"
    return (
        f"{count} rows carry MFI (mfi_cd49d, mfi_gate): sigma is one per subset, identified by "
        "the MFI"
    )


#: What a fit writes (``fit.nc`` last, as the mark of a complete fit).
FIT_OUTPUTS = (
    "fit.nc",
    "estimands.csv",
    "identification.csv",
    "power_scaling.csv",
    "prior_sensitivity.csv",
    "assumption_sensitivity.csv",
    "predictive_checks.csv",
    "ppc_prior.png",
    "ppc_posterior.png",
    "ppc_new_subjects.csv",
    "diagnostics.csv",
)


def remove_previous_outputs(out_dir: Path) -> list[str]:
    """Remove a previous fit's outputs from ``out_dir`` before fitting, so that none outlives a
    fit that fails the gate or is stopped (a build tool would take a stale ``fit.nc`` for the
    current one). Returns the names removed."""
    removed = []
    for name in FIT_OUTPUTS:
        path = out_dir / name
        if path.exists():
            path.unlink()
            removed.append(name)
    return removed


HEADLINE_ESTIMANDS = (
    "ratio_fold_change",
    "differential_reduction",
    "kappa",
    "kappa_difference",
    "exacerbation_log_or",
)


def headline(estimands: pd.DataFrame, identification: pd.DataFrame) -> str:
    """Key estimands with 95% intervals, and the parameters only the prior informs."""
    lines = ["key estimands (posterior mean [95% interval]):"]
    shown = estimands[estimands["estimand"].isin(HEADLINE_ESTIMANDS)].rename(
        columns={"q2.5": "low", "q97.5": "high"}
    )
    for row in shown.itertuples():
        label = " ".join(str(x) for x in (row.estimand, row.subset) if isinstance(x, str) and x)
        lines.append(f"  {label:<32} {row.mean:8.3f} [{row.low:.3f}, {row.high:.3f}]")
    prior_only = identification.loc[identification["informed_by"] == "prior", "parameter"]
    partly = identification.loc[identification["informed_by"] == "data and prior", "parameter"]
    if len(prior_only):
        lines.append(
            "informed by the prior alone (the data barely move it): " + ", ".join(prior_only)
        )
    if len(partly):
        lines.append("informed by data and prior alike: " + ", ".join(partly))
    return "\n".join(lines)


def write_predictive_checks(idata, cohort: Cohort, out_dir: Path) -> None:
    tables = []
    for group, title, name in (
        ("prior_predictive", "Prior predictive check", "ppc_prior.png"),
        ("posterior_predictive", "Posterior predictive check", "ppc_posterior.png"),
    ):
        table = predictive_check_figure(
            idata, cohort, group=group, title=title, output=out_dir / name
        )
        tables.append(table.assign(check=group))
    table = pd.concat(tables, ignore_index=True)
    write_csv(parameter_rows(table, cohort, column="group"), out_dir / "predictive_checks.csv")


def write_prior_sensitivity(
    cohort: Cohort, request: FitRequest, estimands: pd.DataFrame, out_dir: Path
) -> None:
    """Refit under the alternative prior; a refit that fails the gate is recorded, not used."""
    build = partial(MODELS[request.model_name].build, cohort, ALTERNATIVE_PRIOR)
    refit = fit_gated(
        build, request.settings, request.thresholds, seed=request.seed + 1, with_checks=False
    )
    if not refit.passed:
        table = pd.DataFrame(
            [
                {
                    "prior": ALTERNATIVE_PRIOR,
                    "status": "not_converged",
                    "failures": refit.report.describe(),
                }
            ]
        )
    else:
        alternative = estimand_table(refit.idata["posterior"].to_dataset(), cohort.spec)
        table = prior_refit_table(estimands, alternative, alternative_name=ALTERNATIVE_PRIOR)
    write_csv(table, out_dir / "prior_sensitivity.csv")


def flat_provenance(provenance: dict) -> dict[str, str]:
    """netCDF attributes must be flat strings or numbers."""
    flat = {"command": provenance["command"], "python": provenance["python"]}
    for key, value in provenance["inputs"].items():
        flat[f"input_{key}_sha256"] = value["sha256"]
    for name, version in provenance["packages"].items():
        flat[f"version_{name}"] = str(version)
    flat["ignored_columns"] = ", ".join(provenance.get("ignored_columns", []))
    return flat


def write_csv(table: pd.DataFrame, path: Path) -> None:
    write_atomically(table.to_csv(index=False, lineterminator="\n"), path)


def write_netcdf(idata, path: Path) -> None:
    """Write through a temporary file in the same folder and rename: never a partial file."""
    with replacing(path) as temporary:
        idata.to_netcdf(temporary)


def assumption_sensitivity(
    cohort: Cohort, request: FitRequest, estimands: pd.DataFrame
) -> pd.DataFrame:
    """``ASSUMPTION_ESTIMANDS`` under the default model and refitted without each of its
    ``ASSUMPTIONS``: means, SDs, intervals, the shift in default SDs and the ratio of SDs. A
    refit that fails the gate is one row with its status and failures."""
    size = min(request.settings.draws, ASSUMPTION_DRAWS)
    settings = replace(request.settings, draws=size, tune=min(request.settings.tune, size))
    default = estimands[estimands["estimand"].isin(ASSUMPTION_ESTIMANDS)]
    tables = []
    for offset, (assumption, relaxed) in enumerate(ASSUMPTIONS.items(), start=2):
        if assumption == "per_subset_sigma" and has_mfi(cohort):
            row = {"status": "not_applicable", "failures": MFI_SIGMA_NOTE}
            tables.append(pd.DataFrame([{"assumption": assumption, "relaxed": relaxed, **row}]))
            continue
        build = partial(MODELS[request.model_name].build, cohort, assumption)
        refit = fit_gated(
            build, settings, request.thresholds, seed=request.seed + offset, with_checks=False
        )
        if not refit.passed:
            row = {"status": "not_converged", "failures": refit.report.describe()}
            tables.append(pd.DataFrame([{"assumption": assumption, "relaxed": relaxed, **row}]))
            continue
        alternative = estimand_table(refit.idata["posterior"].to_dataset(), cohort.spec)
        table = prior_refit_table(default, alternative, alternative_name="refit")
        table.columns = [c.removesuffix("_refit") for c in table.columns]
        table["sd_ratio"] = table["sd"] / table["sd_default"]
        tables.append(table.assign(assumption=assumption, relaxed=relaxed, status="ok"))
    columns = ["assumption", "relaxed", "status"]
    combined = pd.concat(tables, ignore_index=True)
    return combined[columns + [c for c in combined.columns if c not in columns]]


def assumption_summary(table: pd.DataFrame) -> str:
    """One line per estimand and assumption: the posterior SD under the default and without
    the assumption."""
    lines = ["posterior SD, default -> without the assumption:"]
    for row in table[table["status"] == "ok"].itertuples():
        label = " ".join(str(x) for x in (row.estimand, row.subset) if isinstance(x, str) and x)
        lines.append(
            f"  {row.assumption:<17} {label:<26} {row.sd_default:.3f} -> {row.sd:.3f} "
            f"(x{row.sd_ratio:.1f}); mean {row.mean_default:.3f} -> {row.mean:.3f}"
        )
    if (table["status"] == "not_applicable").any():
        lines.append(f"  per_subset_sigma: not refitted ({MFI_SIGMA_NOTE})")
    failed = table.loc[~table["status"].isin(["ok", "not_applicable"]), "assumption"].tolist()
    if failed:
        lines.append(f"  refits that failed the gate (recorded, not used): {', '.join(failed)}")
    return "\n".join(lines)
