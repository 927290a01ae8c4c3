"""The ``cd49d`` command line: argument parsing and error reporting only.

Exit status: 0 success; 2 bad input (data file, configuration or arguments), with one line per
problem on standard error, no traceback and nothing written; 3 a fit failed the MCMC diagnostics
gate (the failing diagnostics and parameters are named; only diagnostics.csv is written);
1 ``cd49d verify`` found an output that differs from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import click

from models.data import Cohort, CohortFileError, load_cohort
from models.names import MODEL_NAMES, PRIOR_SETS, SAMPLERS
from models.schema import DEFAULT_REFERENCE_SUBSET, DEFAULT_SUBSETS, CohortSpec

EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
#: Fewer effective draws than this behind a held-out elpd: crossval warns.
RELIABLE_DRAWS = 100
PROVENANCE_PACKAGES = ("cd49d", "pymc", "arviz", "numpy", "scipy", "pandas", "statsmodels")


def fail(lines: list[str]) -> None:
    """Print each problem on its own line to standard error and exit with status 2."""
    for line in lines:
        click.echo(line, err=True)
    sys.exit(EXIT_BAD_INPUT)


def spec_from_options(subsets: str, reference_subset: str) -> CohortSpec:
    try:
        return CohortSpec(
            tuple(s.strip() for s in subsets.split(",") if s.strip()), reference_subset
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--subsets/--reference-subset") from err


def read_cohort(path: Path, spec: CohortSpec) -> Cohort:
    """Load through the one loader; on bad input print every problem and exit 2. Unknown
    columns are named in one warning on standard error."""
    try:
        cohort = load_cohort(path, spec)
    except CohortFileError as err:
        count = len(err.problems)
        fail(
            [p.render(path) for p in err.problems]
            + [f"{path}: {count} problem{'s' * (count != 1)} found; nothing was written."]
        )
        raise  # unreachable: fail() exits
    if cohort.ignored_columns:
        click.echo(f"{path}: warning: {ignored_columns_text(cohort.ignored_columns)}", err=True)
    return cohort


def ignored_columns_text(columns: tuple[str, ...]) -> str:
    names = ", ".join(repr(c) for c in columns)
    plural = "s" * (len(columns) != 1)
    return (
        f"unknown column{plural} {names} ignored (not in the schema of data/README.md; "
        "describe and fit record them in provenance)"
    )


def subset_options(command):
    """The options that declare which subsets a file may hold."""
    command = click.option(
        "--reference-subset",
        default=DEFAULT_REFERENCE_SUBSET,
        show_default=True,
        help="The regulatory subset that forms the CD49d ratios' denominator.",
    )(command)
    return click.option(
        "--subsets",
        default=",".join(DEFAULT_SUBSETS),
        show_default=True,
        help="Comma-separated subset labels the file may hold.",
    )(command)


def sampling_options(command):
    """Draws, tuning steps and the root seed, shared by every command that samples."""
    command = click.option(
        "--seed",
        default=2016,
        show_default=True,
        type=int,
        help="Root seed: every sampler, retry, fold and predictive seed derives from it.",
    )(command)
    command = click.option("--tune", default=1000, show_default=True, type=click.IntRange(min=10))(
        command
    )
    return click.option("--draws", default=1000, show_default=True, type=click.IntRange(min=10))(
        command
    )


def provenance(inputs: dict[str, Path], command: str, cohort: Cohort | None = None) -> dict:
    """What produced an output: command, input checksums, package versions and the cohort
    file's ignored columns."""
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "command": command,
        "inputs": {
            k: {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for k, p in inputs.items()
        },
        "python": platform.python_version(),
        "packages": versions,
        "ignored_columns": list(cohort.ignored_columns) if cohort else [],
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cd49d")
def main() -> None:
    """CD49d positive rates under natalizumab: validate and import cohort data, reproduce the
    study's frequentist analysis, fit and compare the Bayesian models, plan follow-up studies by
    simulation, calibrate the models (SBC) and verify the pipeline's outputs.

    The bundled cohort (data/kimura2016_simulated.csv) is SIMULATED with the design of
    Kimura et al. 2016; it is not the study's data. See README.md and data/README.md.
    """


@main.command(short_help="Check a cohort CSV against the schema.")
@click.argument("file", type=click.Path(path_type=Path))
@subset_options
def validate(file: Path, subsets: str, reference_subset: str) -> None:
    """Check a cohort CSV against the schema of data/README.md.

    Prints every problem (file:line: column 'C': what is wrong) and exits with status 2, or
    prints a one-line summary and exits 0.
    """
    cohort = read_cohort(file, spec_from_options(subsets, reference_subset))
    subjects = cohort.subjects
    by_group = subjects["group"].value_counts().reindex(subjects["group"].cat.categories)
    groups = ", ".join(f"{g} {n}" for g, n in by_group.items() if n)
    click.echo(
        f"{file}: valid: {len(cohort.rows)} rows, {len(subjects)} subjects ({groups}); "
        f"subsets {', '.join(cohort.spec.subsets)} "
        f"(reference {cohort.spec.reference_subset})"
    )


@main.command(short_help="The study's own frequentist analysis of a cohort.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for frequentist.csv and provenance.json (created if needed).",
)
@subset_options
def describe(file: Path, out_dir: Path, subsets: str, reference_subset: str) -> None:
    """The study's own analysis: descriptives, Kruskal-Wallis and Mann-Whitney tests.

    Writes OUT/frequentist.csv (one row per descriptive cell or test; columns documented in
    README.md, 'Outputs') and OUT/provenance.json.
    """
    from analysis.frequentist import frequentist_table
    from simulations.atomic import write_atomically

    cohort = read_cohort(file, spec_from_options(subsets, reference_subset))
    table = frequentist_table(cohort)
    write_atomically(table.to_csv(index=False, lineterminator="\n"), out_dir / "frequentist.csv")
    record = provenance({"cohort": file}, "cd49d describe", cohort)
    write_atomically(json.dumps(record, indent=2) + "\n", out_dir / "provenance.json")
    click.echo(summary_text(table))
    if not (table["analysis"] == "exacerbation").any():
        click.echo(
            "no exacerbation comparison: it needs a treated patient with and one without an "
            "exacerbation during follow-up (the exacerbation column)"
        )
    click.echo(f"wrote {out_dir / 'frequentist.csv'} ({len(table)} rows)")


def summary_text(table) -> str:
    """A short human-readable view of the tests for the terminal."""
    tests = table[table["analysis"] != "descriptive"]
    lines = [f"{'analysis':<15} {'quantity':<14} {'subset':<10} {'statistic':>10} {'p':>10}"]
    for row in tests.itertuples():
        lines.append(
            f"{row.analysis:<15} {row.quantity:<14} {row.subset:<10} "
            f"{row.statistic:>10.3g} {row.p_value:>10.3g}"
        )
    return "\n".join(lines)


@main.command(
    "import-flowjo",
    short_help="Turn a FlowJo table export into a cohort CSV.",
)
@click.argument("table", metavar="TABLE.csv", type=click.Path(path_type=Path))
@click.option(
    "--samples",
    "sheet",
    required=True,
    type=click.Path(path_type=Path),
    help="SHEET.csv: sample (the table's sample name), subject_id, group and subject-level "
    "columns (exacerbation, patient_id, covariates).",
)
@click.option(
    "--gates",
    required=True,
    type=click.Path(path_type=Path),
    help="GATES.toml: one [subsets.NAME] table per subset with parent, positive and, optional "
    "and together, mfi (the median column) and gate_value (the CD49d+ gate boundary).",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="The cohort CSV to write."
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@subset_options
def import_flowjo_command(
    table: Path,
    sheet: Path,
    gates: Path,
    out: Path,
    overwrite: bool,
    subsets: str,
    reference_subset: str,
) -> None:
    """Turn a FlowJo table-editor export into a cohort CSV (data/README.md, 'FlowJo tables').

    Per sample and subset: n_cells from the parent gate's Count, n_cd49d_pos from the CD49d+
    gate's Count and pct_cd49d_pos from its Freq. of Parent, where the table has them. The
    trailing Mean and SD rows are dropped. The cohort goes through the validator of `cd49d
    validate`; every problem is printed as FILE:LINE: column 'C': what is wrong (in the table,
    the sheet or the gates file), exit status 2, and nothing is written.
    """
    from models.flowjo import FlowJoImportError, import_flowjo
    from simulations.atomic import write_atomically

    spec = spec_from_options(subsets, reference_subset)
    if out.exists() and not overwrite:
        fail([f"{out}: exists; choose another --out or pass --overwrite"])
    try:
        imported = import_flowjo(table, sheet, gates, spec)
    except FlowJoImportError as err:
        count = len(err.problems)
        fail(
            [p.render() for p in err.problems]
            + [f"{count} problem{'s' * (count != 1)} found; nothing was written."]
        )
    if imported.ignored_columns:
        names = ", ".join(repr(c) for c in imported.ignored_columns)
        click.echo(
            f"{sheet}: warning: not imported: {names} (not in the schema of data/README.md)",
            err=True,
        )
    write_atomically(imported.text, out)
    measured = "; ".join(f"{subset}: {kind}" for subset, kind in imported.measured.items())
    click.echo(
        f"wrote {out}: {imported.rows} rows, {imported.samples} samples x "
        f"{len(imported.measured)} subsets ({measured})"
    )


@main.command("simulate-cohort", short_help="Draw a SIMULATED cohort with the study's design.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Cohort configuration TOML [default: the bundled "
    "simulations/configs/kimura2016_cohort.toml].",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Root seed [default: the configuration's seed, which gives the bundled file].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("data/kimura2016_simulated.csv"),
    show_default=True,
    help="Where to write the cohort CSV.",
)
def simulate_cohort_command(config_path: Path | None, seed: int | None, out: Path) -> None:
    """Draw a SIMULATED cohort with the study's design from the package's own model.

    With the bundled configuration and its seed this regenerates data/kimura2016_simulated.csv
    byte for byte.
    """
    from simulations.atomic import write_atomically
    from simulations.cohort import (
        DEFAULT_CONFIG,
        CohortDrawError,
        ConfigError,
        cohort_csv_text,
        load_config,
        simulate_cohort,
    )

    try:
        config = load_config(config_path)
        frame = simulate_cohort(config, seed=seed)
    except ConfigError as err:
        fail([str(err)])
    except CohortDrawError as err:
        fail([f"{config_path or DEFAULT_CONFIG}: {err}; nothing was written."])
    text = cohort_csv_text(frame)
    write_atomically(text, out)
    used = config.seed if seed is None else seed
    click.echo(f"wrote {out}: simulated cohort (seed {used}); not the study's measurements")


@main.command(short_help="Fit a Bayesian model to a cohort, gated by diagnostics.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_name",
    required=True,
    type=click.Choice(MODEL_NAMES),
    help="Which model to fit (README.md, 'Models').",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for fit.nc, estimands.csv and the checks (created if needed).",
)
@click.option(
    "--prior-set",
    default="default",
    show_default=True,
    type=click.Choice(PRIOR_SETS),
    help="Named prior set (models/priors.py): default; uniform_saturation (each patient's "
    "occupancy Uniform(0.6, 1)); per_subset_sigma and treated_offset (the assumption "
    "sensitivity analyses).",
)
@click.option(
    "--sampler",
    default="nutpie",
    show_default=True,
    type=click.Choice(SAMPLERS),
    help="NUTS implementation.",
)
@sampling_options
@click.option("--chains", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--rhat-max", default=1.01, show_default=True, type=float)
@click.option(
    "--min-ess", default=400.0, show_default=True, type=float, help="Minimum bulk and tail ESS."
)
@click.option("--max-divergences", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--min-ebfmi", default=0.3, show_default=True, type=float)
@click.option(
    "--sensitivity/--no-sensitivity",
    default=True,
    show_default=True,
    help="For saturation models, refit under a uniform occupancy prior on [0.6, 1].",
)
@subset_options
def fit(
    file: Path,
    model_name: str,
    out_dir: Path,
    prior_set: str,
    sampler: str,
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    rhat_max: float,
    min_ess: float,
    max_divergences: int,
    min_ebfmi: float,
    sensitivity: bool,
    subsets: str,
    reference_subset: str,
) -> None:
    """Fit a Bayesian model to a cohort: posterior, estimands and checks, behind a gate.

    A fit must pass R-hat, bulk/tail ESS, divergence and E-BFMI limits; if not, it is retried
    once at target acceptance 0.97, and if it still fails the command names the failing
    diagnostics and exits with status 3.
    """
    from analysis.fit_report import FitRequest, run_fit
    from models.diagnostics import Thresholds
    from models.fit import SamplerSettings

    cohort = read_cohort(file, spec_from_options(subsets, reference_subset))
    request = FitRequest(
        model_name=model_name,
        prior_set=prior_set,
        seed=seed,
        sensitivity=sensitivity,
        settings=SamplerSettings(
            sampler=sampler, draws=draws, tune=tune, chains=chains, progressbar=sys.stderr.isatty()
        ),
        thresholds=Thresholds(
            rhat_max=rhat_max,
            ess_bulk_min=min_ess,
            ess_tail_min=min_ess,
            divergences_max=max_divergences,
            ebfmi_min=min_ebfmi,
        ),
    )
    record = provenance({"cohort": file}, f"cd49d fit --model {model_name}", cohort)
    try:
        result = run_fit(
            cohort, request, out_dir, provenance=record, say=lambda text: click.echo(text, err=True)
        )
    except ValueError as err:  # a cohort the model cannot take (e.g. no treated patients)
        fail([f"{file}: {err}"])
    if not result.passed:
        lines = [
            f"{model_name}: the fit failed the diagnostics gate after target acceptance "
            f"{', '.join(map(str, result.attempts))}:"
        ]
        lines += [f"  {failure}" for failure in result.report.failures]
        lines += [
            f"per-parameter diagnostics: {out_dir / 'diagnostics.csv'}; nothing else was written, "
            "and no earlier fit's outputs are left in the folder."
        ]
        for line in lines:
            click.echo(line, err=True)
        sys.exit(EXIT_NOT_CONVERGED)
    click.echo(f"{model_name}: diagnostics passed; wrote {out_dir}/fit.nc and estimands.csv")


@main.command(short_help="Compare fits by PSIS-LOO on the CD49d counts.")
@click.argument("fits", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="CSV file for the comparison table.",
)
def compare(fits: tuple[Path, ...], out: Path) -> None:
    """Compare fits (fit.nc files from cd49d fit) by PSIS-LOO on the CD49d counts.

    Writes ELPD, its SE, differences and stacking weights per model, and Pareto k warnings.
    """
    from analysis.model_comparison import compare_fits, comparison_problems
    from simulations.atomic import write_atomically

    if len(fits) < 2:
        fail(["cd49d compare needs at least two fit.nc files"])
    problems = comparison_problems(list(fits))
    if problems:
        fail([*problems, "nothing was written."])
    table, others = compare_fits(list(fits))
    write_atomically(table.to_csv(index=False, lineterminator="\n"), out)
    click.echo(table.to_string(index=False))
    high = table.set_index("model")["n_pareto_k_above_0.7"]
    if (high > 0).any():
        counts = ", ".join(f"{model} {count}" for model, count in high.items())
        click.echo(
            f"WARNING: Pareto k > 0.7 for some observations ({counts}): PSIS-LOO is unreliable "
            "there and the comparison above should not decide between the models (cd49d "
            "crossval compares them by held-out subjects).",
            err=True,
        )
    for message in others:
        click.echo(f"warning (ArviZ): {message}", err=True)


@main.command(short_help="Compare models by K-fold cross-validation by subject.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_names",
    multiple=True,
    required=True,
    type=click.Choice(MODEL_NAMES),
    help="A model to score; give two or more to compare them.",
)
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for kfold_subjects.csv and kfold_compare.csv.",
)
@sampling_options
@subset_options
def crossval(
    file: Path,
    model_names: tuple[str, ...],
    folds: int,
    out_dir: Path,
    seed: int,
    draws: int,
    tune: int,
    subsets: str,
    reference_subset: str,
) -> None:
    """Compare models by K-fold cross-validation by subject: how well each predicts new patients.

    Every fold is refitted behind the diagnostics gate; a fold that fails is recorded
    (status not_converged) and its subjects are left out of the comparison, with the count
    reported. Use this rather than PSIS-LOO when cd49d compare reports many Pareto k > 0.7.
    """
    import pandas as pd
    from tqdm import tqdm

    from analysis.crossval import compare_kfold, kfold_by_subject
    from models.diagnostics import Thresholds
    from models.fit import SamplerSettings
    from models.registry import MODELS
    from simulations.atomic import write_atomically

    cohort = read_cohort(file, spec_from_options(subsets, reference_subset))
    for name in model_names:  # before any fold is fitted
        try:
            MODELS[name].check(cohort)
        except ValueError as err:
            fail([f"{file}: {err}"])
    settings = SamplerSettings(draws=draws, tune=tune)
    tables = []
    with tqdm(total=folds * len(model_names), desc="fold fits", unit="fit") as bar:
        for name in model_names:
            try:
                tables.append(
                    kfold_by_subject(
                        cohort,
                        name,
                        k=folds,
                        seed=seed,
                        settings=settings,
                        thresholds=Thresholds(),
                        on_fold=bar.update,
                    )
                )
            except ValueError as err:
                fail([f"{file}: {err}"])
    per_subject = pd.concat(tables, ignore_index=True)
    summary = compare_kfold(per_subject)
    for table, name in ((per_subject, "kfold_subjects.csv"), (summary, "kfold_compare.csv")):
        write_atomically(table.to_csv(index=False, lineterminator="\n"), out_dir / name)
    click.echo(summary.to_string(index=False))
    click.echo(
        "criterion: crps (summed over held-out subjects and subsets, percentage points; "
        "lower is better); elpd is shown with the effective draws behind it"
    )
    if (summary["median_effective_draws"] < RELIABLE_DRAWS).any():
        click.echo(
            f"WARNING: the held-out elpd of a median subject rests on fewer than "
            f"{RELIABLE_DRAWS} effective posterior draws: it is noisy and biased low; "
            "compare the models by crps.",
            err=True,
        )


@main.command(short_help="Power and sample size of a planned study, by simulation.")
@click.argument("plan_file", metavar="PLAN.toml", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1), help="Local processes."
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Dask scheduler (tcp://host:port); tasks then run on its workers instead.",
)
@click.option(
    "--design-prior",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="fit.nc of a latent-expression model: draw each trial's parameters from its "
    "posterior (assurance) instead of the plan's fixed effect.",
)
@click.option(
    "--save-datasets", is_flag=True, help="Also write every simulated trial as a cohort CSV."
)
@click.option(
    "--replicates",
    type=click.IntRange(1),
    help="Fixed replicates per cell (both scenarios), overriding the plan's counts and MCSE "
    "target: a quick run.",
)
@click.option(
    "--bayes-replicates",
    type=click.IntRange(0),
    help="Override analysis.bayesian.replicates (0 turns the Bayesian refits off).",
)
@click.option(
    "--vary",
    "vary",
    multiple=True,
    metavar="NAME=V1,V2,...",
    help="Rerun the sample-size search with one assumption changed to each value (repeatable; "
    "added to the plan's [sensitivity] table). NAME: kappa, saturation_mean, saturation_sd, "
    "tau_subject, tau_subject_subset, visit_sd (paired), events_per_gate_scale, "
    "exacerbation_log_or.",
)
@click.option(
    "--figures/--no-figures",
    default=True,
    show_default=True,
    help="Draw power_curve.png (and sample_size_sensitivity.png); the pipeline draws them in "
    "rules of their own, so that a change of a figure reruns no simulation.",
)
@click.option(
    "--replace-stale",
    is_flag=True,
    help="If --out holds results of other inputs (plan, cohort configuration, code), delete "
    "them and start afresh instead of refusing (the pipeline's choice; a current folder is "
    "still resumed).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def power(
    plan_file: Path,
    out: Path,
    workers: int,
    scheduler: str | None,
    design_prior: Path | None,
    save_datasets: bool,
    replicates: int | None,
    bayes_replicates: int | None,
    vary: tuple[str, ...],
    figures: bool,
    replace_stale: bool,
    no_progress: bool,
) -> None:
    """Simulate trials from a PLAN.toml and estimate power and sample size.

    Writes power.csv, type_i_error.csv, sample_size.csv, performance.csv, power_curve.png
    (unless --no-figures), records.parquet and records/ (one file per replicate) under --out;
    with --vary or a [sensitivity] table also sample_size_sensitivity.csv and .png, each
    variant's run under
    --out/sensitivity/. Rerunning the same command resumes: stored replicates are skipped,
    results are identical to an uninterrupted run. Every trial is simulated from the package's
    models: no output is a measurement of any study.
    """
    from simulations.plan import PlanError, load_plan
    from simulations.sensitivity import parse_vary, variations
    from simulations.store import StoreMismatch

    try:
        plan = with_overrides(load_plan(plan_file), replicates, bayes_replicates)
        varied = variations(plan, [parse_vary(text) for text in vary])
    except PlanError as err:
        fail(err.lines)
    except ValueError as err:
        fail([str(err)])
    if varied and design_prior is not None:
        fail(["--vary and [sensitivity] need the plan's fixed effect, not --design-prior"])
    from simulations.observable import effect_lines, observable_effect
    from simulations.power import describe_run, run_plan

    try:
        observable = observable_effect(plan, design_prior=design_prior is not None)
        for line in effect_lines(observable):
            click.echo(line)
        if design_prior is not None:
            click.echo("  (with --design-prior each trial draws its own parameters instead)")
        outputs = run_plan(
            plan,
            out,
            workers=workers,
            scheduler=scheduler,
            design_prior=design_prior,
            save_datasets=save_datasets,
            progress=not no_progress,
            observable=observable,
            replace_stale=replace_stale,
        )
    except (StoreMismatch, ValueError) as err:
        fail([str(err)])
    if outputs.replaced:
        click.echo(f"Replaced the stale results in {out}: {'; '.join(outputs.replaced)}")
    if figures:
        from analysis.fig_power_curve import make as make_figure

        make_figure(out / "power.csv", out / "sample_size.csv", out / "power_curve.png")
    for line in describe_run(outputs):
        click.echo(line)
    if varied:
        run_options = {"workers": workers, "scheduler": scheduler, "progress": not no_progress}
        run_variations(
            plan, out, varied, outputs, run_options | {"replace_stale": replace_stale}, figures
        )
    click.echo(f"Written under {out}/ (simulated trials, not study data).")


def run_variations(
    plan, out: Path, varied: dict, outputs, run_options: dict, figures: bool
) -> None:
    """Run each varied assumption's plans (``run_plan`` with ``run_options``), then write and
    summarise the sensitivity table."""
    from analysis.fig_sample_size_sensitivity import make as make_sensitivity_figure
    from simulations.atomic import write_atomically
    from simulations.power import run_plan, sample_size_text
    from simulations.sensitivity import run_sensitivity

    click.echo("Sensitivity: " + "; ".join(f"{k} = {v}" for k, v in varied.items()))
    table = run_sensitivity(plan, out, varied, outputs.sample_size, run_plan, **run_options)
    path = out / "sample_size_sensitivity.csv"
    write_atomically(table.to_csv(index=False, lineterminator="\n"), path)
    if figures:
        make_sensitivity_figure(path, out / "sample_size_sensitivity.png")
    for row in table[table["target_power"] == 0.8].itertuples():
        click.echo(
            f"80% power at {row.assumption} = {row.value:g}: {row.endpoint} {row.analysis}: "
            f"{sample_size_text(row)}"
        )


def with_overrides(plan, replicates: int | None, bayes_replicates: int | None):
    """The plan with command-line replicate counts applied (validated again)."""
    from simulations.plan import Plan

    raw = plan.model_dump()
    if replicates is not None:
        counts = raw["replicates"]
        counts.update(
            initial=replicates,
            null=replicates,
            max=max(counts["max"], replicates),
            mcse_target=None,
        )
    if bayes_replicates is not None:
        raw["analysis"]["bayesian"]["replicates"] = bayes_replicates or None
        raw["analysis"]["bayesian"]["enabled"] = bayes_replicates > 0
    return Plan.model_validate(raw)


@main.command(short_help="Simulation-based calibration of a model.")
@click.option("--model", "model_name", required=True, type=click.Choice(MODEL_NAMES), help="Model.")
@click.option(
    "--draws", required=True, type=click.IntRange(1), help="Replicates (prior draws) to fit."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option(
    "--prior-set",
    default="default",
    show_default=True,
    type=click.Choice(PRIOR_SETS),
    help="Prior set of the model (generated and fitted alike).",
)
@click.option("--seed", default=20180412, show_default=True, help="Root seed of every replicate.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1), help="Local processes."
)
@click.option(
    "--replace-stale",
    is_flag=True,
    help="If --out holds SBC results of another configuration or code, delete them and start "
    "afresh instead of refusing (a current folder is still resumed).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sbc(
    model_name: str,
    draws: int,
    out: Path,
    prior_set: str,
    seed: int,
    workers: int,
    replace_stale: bool,
    no_progress: bool,
) -> None:
    """Simulation-based calibration of a model on the batched fast path.

    Draws parameters from the prior, simulates a cohort of the study's design from the same
    graph, refits it behind the gate and ranks each true value among thinned posterior draws,
    for every top-level parameter, every estimand and the data's log-likelihood. Writes
    ranks.parquet, sbc_summary.csv (uniformity with simultaneous bands, contraction),
    fits.csv (per replicate: gate status and what was tried), sbc_ecdf.png and manifest.json
    under --out; rerunning resumes. Every cohort is simulated: nothing here is study data.
    """
    from simulations.sbc import SbcConfig, run_sbc
    from simulations.sbc_summary import failure_dependent, fits_table, summary_table, verdict

    try:
        config = SbcConfig(model=model_name, draws=draws, root_seed=seed, prior_set=prior_set)
        rows = run_sbc(
            config, out, workers=workers, progress=not no_progress, replace_stale=replace_stale
        )
    except ValueError as err:
        fail([str(err)])
    from analysis.fig_sbc import make as make_figure
    from simulations.atomic import write_atomically

    summary, fits = summary_table(rows), fits_table(rows)
    rows.to_parquet(out / "ranks.parquet", index=False)
    write_atomically(summary.to_csv(index=False, lineterminator="\n"), out / "sbc_summary.csv")
    write_atomically(fits.to_csv(index=False, lineterminator="\n"), out / "fits.csv")
    make_figure(out / "ranks.parquet", out / "sbc_summary.csv", out / "sbc_ecdf.png")
    click.echo(verdict(summary, fits))
    for row in failure_dependent(summary).itertuples():
        click.echo(
            f"Failed fits depend on {row.quantity}: median true value {row.true_median_failed:.3g} "
            f"in failed fits, {row.true_median_ranked:.3g} in ranked ones "
            f"(Mann-Whitney p = {row.failure_p_value:.1e})"
        )
    prior = summary[summary["informed_by"] == "prior"]["quantity"].tolist()
    if prior:
        click.echo(f"Informed by the prior alone (contraction < 0.1): {', '.join(prior)}")
    click.echo(f"Written under {out}/ (simulated cohorts, not study data).")


@main.command(short_help="Rebuild the pipeline and compare outputs with the manifest.")
@click.option(
    "--manifest",
    "manifest_path",
    default="paper/manifest.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The manifest of the build to verify (the build is the tree above its paper/ folder).",
)
@click.option(
    "--rebuilt",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Compare this already rebuilt tree (results in DIR/results) instead of rebuilding.",
)
@click.option(
    "--cores",
    default=None,
    type=click.IntRange(min=1),
    help="Cores for the rebuild [default: as the manifest records].",
)
@click.option("--keep", is_flag=True, help="Keep the temporary folder of the rebuild.")
def verify(manifest_path: Path, rebuilt: Path | None, cores: int | None, keep: bool) -> None:
    """Rebuild the pipeline in a temporary folder and compare every output with the manifest.

    Deterministic outputs must be byte-identical; tables of MCMC and simulation numbers agree
    within the Monte Carlo tolerances declared in analysis/verify.py; netCDF, PNG and PDF files
    are compared through the numbers made with or from them. Prints one line per output (same,
    within tolerance, compared through, DIFFERS with the column and by how much, missing) and
    exits 1 when any output differs or is missing, or a source file differs from the manifest's.
    """
    from analysis.verify import VerifyError
    from analysis.verify import verify as verify_build

    try:
        report = verify_build(
            manifest_path,
            rebuilt=rebuilt,
            cores=cores,
            keep=keep,
            progress=lambda line: click.echo(line, err=True),
        )
    except VerifyError as err:
        fail([str(err)])
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.passed else 1)
