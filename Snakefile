# The pipeline: cohort -> fits -> model comparison -> power and SBC -> numbers -> manuscript.
# The one place where the dependencies are declared. Rules call `cd49d` commands and the
# analysis scripts; no analysis logic lives here. Every rule lists the code it runs among its
# inputs, so that a change of model, simulation or analysis code (or of the lock file: the
# package versions) reruns what depends on it, and nothing else.
#
#   snakemake --cores 2                  # what `make reproduce` runs
#   snakemake --cores 2 --config scale=full results=results/full   # make reproduce-full
#   snakemake -n                         # what would run, and why
#
# Sizes (config `scale`): `reduced` (the default, `make reproduce`) runs each power plan with
# `power_replicates` replicates per cell and SBC with `sbc_draws` prior draws per model; `full`
# (`make reproduce-full`) runs the plans at their own replicate counts and SBC at 500 draws.

import tomllib
from pathlib import Path

configfile: "pipeline.yaml"

SCALE = config.get("scale", "reduced")
SIZES = config["scales"][SCALE]
RESULTS = config.get("results", "results")
COHORT = config["cohort"]
FITS = config["fits"]
PLANS = config["plans"]
SBC_MODELS = config["sbc_models"]
CORES = workflow.cores
SBC_THREADS = max(1, CORES // len(SBC_MODELS))
#: Wall time of each model's SBC at the reduced scale on one worker with empty compilation
#: caches (s; `make reproduce`, 2026-12-05): the scheduling priority of its job.
SBC_SECONDS = {
    "saturation_per_subset": 232,
    "exacerbation": 209,
    "saturation": 191,
    "exacerbation_logit": 139,
    "positive_rate": 115,
}


def sources(*folders, extra=()):
    """The Python files of ``folders`` (recursively), the lock file and ``extra`` files."""
    files = [str(p) for folder in folders for p in sorted(Path(folder).rglob("*.py"))]
    return sorted(set(files) | {"uv.lock", "pyproject.toml", *extra})


CLI = ["analysis/cli.py", "analysis/__init__.py", "analysis/__main__.py"]
MODEL_CODE = sources("models", extra=CLI)
FIT_CODE = sources(
    "models",
    extra=[*CLI, "analysis/fit_report.py", "analysis/predictive_checks.py"],
)
SIMULATION_CODE = sources("models", "simulations", extra=CLI)
FIGURE_CODE = ["analysis/style.py", "uv.lock"]


def has_sensitivity(plan):
    """Whether a plan's file has a ``[sensitivity]`` table (its run then writes
    sample_size_sensitivity.csv)."""
    with open(f"simulations/plans/{plan}.toml", "rb") as handle:
        return bool(tomllib.load(handle).get("sensitivity"))


SENSITIVITY_PLANS = [plan for plan in PLANS if has_sensitivity(plan)]


RESULT_FILES = [
    f"{RESULTS}/frequentist/frequentist.csv",
    expand(f"{RESULTS}/fits/{{model}}/fit.nc", model=FITS),
    f"{RESULTS}/fits/loo_kappa.csv",
    f"{RESULTS}/crossval/kfold_compare.csv",
    expand(f"{RESULTS}/power/{{plan}}/power_curve.png", plan=PLANS),
    expand(f"{RESULTS}/power/{{plan}}/sample_size_sensitivity.png", plan=SENSITIVITY_PLANS),
    expand(f"{RESULTS}/sbc/{{model}}/sbc_summary.csv", model=SBC_MODELS),
    f"{RESULTS}/sample_size_validation.csv",
    f"{RESULTS}/mfi/mfi_comparison.csv",
]


#: The manuscript's figures (paper/figures/NAME.pdf and .png), each drawn by a rule below.
FIGURES = [
    "fig1_data",
    "fig2_mechanism",
    "fig3_ratios",
    "fig4_planning",
    "figS1_sbc",
    "figS2_diagnostics",
    "figS3_prior_posterior",
    "figS4_type_i",
    "figS5_cohort_findings",
    "figS6_ppc_new_subjects",
]
FIGURE_FILES = [f"paper/figures/{name}.{kind}" for name in FIGURES for kind in ("pdf", "png")]


rule all:
    input:
        "paper/manuscript.pdf",
        RESULT_FILES,
        "paper/manifest.json",


rule describe:
    input:
        cohort=COHORT,
        code=sources("models", extra=[*CLI, "analysis/frequentist.py"]),
    output:
        f"{RESULTS}/frequentist/frequentist.csv",
        f"{RESULTS}/frequentist/provenance.json",
    params:
        out=f"{RESULTS}/frequentist",
    shell:
        "cd49d validate {input.cohort} && cd49d describe {input.cohort} --out {params.out}"


#: Models whose fit also refits without its assumptions (assumption_sensitivity.csv).
ASSUMPTION_MODELS = ["saturation_per_subset"]
FIT_TABLES = ["fit.nc", "estimands.csv", "ppc_new_subjects.csv", "identification.csv"]


rule fit:
    input:
        cohort=COHORT,
        code=FIT_CODE,
    output:
        [f"{RESULTS}/fits/{{model}}/{name}" for name in FIT_TABLES],
    wildcard_constraints:
        model="|".join(m for m in FITS if m not in ASSUMPTION_MODELS) or "(?!)",
    params:
        out=lambda wildcards: f"{RESULTS}/fits/{wildcards.model}",
    threads: 2
    shell:
        "cd49d fit {input.cohort} --model {wildcards.model} --out {params.out}"


use rule fit as fit_with_assumptions with:
    output:
        [f"{RESULTS}/fits/{{model}}/{name}" for name in FIT_TABLES],
        f"{RESULTS}/fits/{{model}}/assumption_sensitivity.csv",
    wildcard_constraints:
        model="|".join(ASSUMPTION_MODELS),


rule mfi_comparison:
    input:
        config="simulations/configs/kimura2016_cohort.toml",
        code=sources("models", extra=["analysis/mfi_comparison.py", "simulations/cohort.py"]),
    output:
        f"{RESULTS}/mfi/mfi_comparison.csv",
        f"{RESULTS}/mfi/cohort_mfi.csv",
    params:
        out=f"{RESULTS}/mfi",
    threads: 2
    shell:
        "python -m analysis.mfi_comparison {params.out}"


rule compare:
    input:
        fits=expand(f"{RESULTS}/fits/{{model}}/fit.nc", model=["saturation", "saturation_per_subset"]),
        code=sources("models", extra=[*CLI, "analysis/model_comparison.py"]),
    output:
        f"{RESULTS}/fits/loo_kappa.csv",
    shell:
        "cd49d compare {input.fits} --out {output}"


rule crossval:
    input:
        cohort=COHORT,
        code=sources("models", extra=[*CLI, "analysis/crossval.py"]),
    output:
        f"{RESULTS}/crossval/kfold_compare.csv",
    params:
        out=f"{RESULTS}/crossval",
    threads: 2
    shell:
        "cd49d crossval {input.cohort} --model saturation --model saturation_per_subset "
        "--folds 5 --out {params.out}"


def power_size(wildcards):
    """``--replicates N`` and ``--bayes-replicates M`` where the scale sets them; otherwise the
    plan's own counts (every replicate refitted)."""
    options = {"--replicates": SIZES.get("power_replicates"),
               "--bayes-replicates": SIZES.get("power_bayes_replicates")}
    return " ".join(f"{flag} {value}" for flag, value in options.items() if value is not None)


POWER_COMMAND = (
    "cd49d power {input.plan} --out {params.out} --workers {threads} {params.size} "
    "--no-figures --no-progress --replace-stale"
)
POWER_TABLES = ["power.csv", "type_i_error.csv", "performance.csv", "sample_size.csv"]
PLAIN_PLANS = [plan for plan in PLANS if plan not in SENSITIVITY_PLANS]


rule power:
    input:
        plan="simulations/plans/{plan}.toml",
        configs=sorted(str(p) for p in Path("simulations/configs").glob("*.toml")),
        code=SIMULATION_CODE,
    output:
        [f"{RESULTS}/power/{{plan}}/{name}" for name in POWER_TABLES],
    wildcard_constraints:
        plan="|".join(PLAIN_PLANS) or "(?!)",
    params:
        out=lambda wildcards: f"{RESULTS}/power/{wildcards.plan}",
        size=power_size,
    threads: CORES
    shell:
        POWER_COMMAND


# A plan with a [sensitivity] table: its run also writes sample_size_sensitivity.csv.
use rule power as power_with_sensitivity with:
    output:
        [f"{RESULTS}/power/{{plan}}/{name}" for name in POWER_TABLES],
        f"{RESULTS}/power/{{plan}}/sample_size_sensitivity.csv",
    wildcard_constraints:
        plan="|".join(SENSITIVITY_PLANS) or "(?!)",


rule power_curve:
    input:
        power=f"{RESULTS}/power/{{plan}}/power.csv",
        sizes=f"{RESULTS}/power/{{plan}}/sample_size.csv",
        code=["analysis/fig_power_curve.py", "simulations/sample_size.py", *FIGURE_CODE],
    output:
        f"{RESULTS}/power/{{plan}}/power_curve.png",
    shell:
        "python -m analysis.fig_power_curve {input.power} {input.sizes} {output}"


rule sensitivity_figure:
    input:
        table=f"{RESULTS}/power/{{plan}}/sample_size_sensitivity.csv",
        code=["analysis/fig_sample_size_sensitivity.py", *FIGURE_CODE],
    output:
        f"{RESULTS}/power/{{plan}}/sample_size_sensitivity.png",
    shell:
        "python -m analysis.fig_sample_size_sensitivity {input.table} {output}"


rule sbc:
    input:
        code=sources("models", "simulations", extra=[*CLI, "analysis/fig_sbc.py"]),
    output:
        f"{RESULTS}/sbc/{{model}}/sbc_summary.csv",
        f"{RESULTS}/sbc/{{model}}/ranks.parquet",
    params:
        out=lambda wildcards: f"{RESULTS}/sbc/{wildcards.model}",
        draws=SIZES["sbc_draws"],
    # Each worker process traces and compiles the model's samplers (about 40 s per model with
    # empty caches, 12 s with warm ones): the models share the cores side by side, one worker
    # each on 2 cores, rather than each model compiling on every core in turn.
    threads: SBC_THREADS
    # the longest first, so that the last one does not run alone beside an idle core
    priority: lambda wildcards: SBC_SECONDS.get(wildcards.model, 0)
    shell:
        "cd49d sbc --model {wildcards.model} --draws {params.draws} --out {params.out} "
        "--workers {threads} --no-progress --replace-stale"


rule sample_size_validation:
    input:
        plans=sorted(str(p) for p in Path("simulations/plans").glob("*.toml")),
        code=["simulations/sample_size.py", "simulations/sample_size_validation.py",
              "analysis/tab_sample_size_validation.py", "uv.lock"],
    output:
        f"{RESULTS}/sample_size_validation.csv",
    params:
        runs=SIZES["sample_size_runs"],
        # the method is validated at the replicates per cell the power rules ran, too
        replicates=lambda wildcards: (
            f"--replicates {SIZES['power_replicates']}" if SIZES.get("power_replicates") else ""
        ),
    shell:
        "python -m analysis.tab_sample_size_validation {output} --runs {params.runs} "
        "{params.replicates}"


rule numbers:
    input:
        f"{RESULTS}/frequentist/frequentist.csv",
        # each fit job also writes diagnostics.csv and (occupancy models) prior_sensitivity.csv
        expand(
            f"{RESULTS}/fits/{{model}}/{{name}}",
            model=FITS,
            name=["estimands.csv", "identification.csv", "ppc_new_subjects.csv"],
        ),
        f"{RESULTS}/fits/loo_kappa.csv",
        expand(f"{RESULTS}/fits/{{model}}/assumption_sensitivity.csv", model=ASSUMPTION_MODELS),
        f"{RESULTS}/mfi/mfi_comparison.csv",
        f"{RESULTS}/crossval/kfold_compare.csv",
        # each power job also writes the run's manifest.json
        expand(f"{RESULTS}/power/{{plan}}/{{name}}", plan=PLANS, name=POWER_TABLES),
        expand(f"{RESULTS}/sbc/{{model}}/sbc_summary.csv", model=SBC_MODELS),
        f"{RESULTS}/sample_size_validation.csv",
        figures=FIGURE_FILES,  # numbers.json lists the figures built
        cohort=COHORT,
        config="simulations/configs/kimura2016_cohort.toml",
        code=["analysis/numbers.py", "analysis/frequentist.py", "models/data.py",
              "models/validation.py", "models/schema.py", "uv.lock"],
    output:
        "paper/generated/numbers.json",
    shell:
        f"python -m analysis.numbers {RESULTS} {{input.cohort}} {{output}}"


rule figure_data:
    input:
        cohort=COHORT,
        estimands=f"{RESULTS}/fits/positive_rate/estimands.csv",
        code=["analysis/fig_data_estimates.py", "models/schema.py", *FIGURE_CODE],
    output:
        "paper/figures/fig1_data.pdf",
        "paper/figures/fig1_data.png",
    shell:
        "python -m analysis.fig_data_estimates {input.cohort} {input.estimands} "
        "paper/figures/fig1_data"


rule figure_planning:
    input:
        expand(f"{RESULTS}/power/{{plan}}/power.csv", plan=PLANS),
        expand(f"{RESULTS}/power/{{plan}}/sample_size.csv", plan=PLANS),
        code=["analysis/fig_planning.py", "analysis/fig_power_curve.py", *FIGURE_CODE],
    output:
        "paper/figures/fig4_planning.pdf",
        "paper/figures/fig4_planning.png",
    shell:
        f"python -m analysis.fig_planning {RESULTS}/power paper/figures/fig4_planning"


rule figure_mechanism:
    input:
        cohort=COHORT,
        saturation=f"{RESULTS}/fits/saturation/fit.nc",
        per_subset=f"{RESULTS}/fits/saturation_per_subset/fit.nc",
        loo=f"{RESULTS}/fits/loo_kappa.csv",
        code=sources("models", extra=["analysis/fig_mechanism.py", *FIGURE_CODE]),
    output:
        "paper/figures/fig2_mechanism.pdf",
        "paper/figures/fig2_mechanism.png",
    shell:
        "python -m analysis.fig_mechanism {input.cohort} {input.saturation} {input.per_subset} "
        "paper/figures/fig2_mechanism --loo {input.loo}"


rule figure_ratios:
    input:
        cohort=COHORT,
        exacerbation=f"{RESULTS}/fits/exacerbation/fit.nc",
        estimands=[f"{RESULTS}/fits/positive_rate/estimands.csv",
                   f"{RESULTS}/fits/saturation/estimands.csv"],
        code=sources("models", extra=["analysis/fig_ratios.py", "analysis/frequentist.py",
                                      *FIGURE_CODE]),
    output:
        "paper/figures/fig3_ratios.pdf",
        "paper/figures/fig3_ratios.png",
    shell:
        "python -m analysis.fig_ratios {input.cohort} {input.exacerbation} paper/figures/fig3_ratios "
        "--estimands {input.estimands[0]} --estimands {input.estimands[1]}"


rule figure_sbc_supplement:
    input:
        expand(f"{RESULTS}/sbc/{{model}}/ranks.parquet", model=SBC_MODELS),
        expand(f"{RESULTS}/sbc/{{model}}/sbc_summary.csv", model=SBC_MODELS),
        code=sources("models", extra=["analysis/fig_sbc_ecdf.py", "analysis/fig_sbc.py",
                                      "simulations/sbc_summary.py", *FIGURE_CODE]),
    output:
        "paper/figures/figS1_sbc.pdf",
        "paper/figures/figS1_sbc.png",
    params:
        folders=expand(f"{RESULTS}/sbc/{{model}}", model=SBC_MODELS),
    shell:
        "python -m analysis.fig_sbc_ecdf {params.folders} paper/figures/figS1_sbc"


rule figure_diagnostics:
    input:
        fits=expand(f"{RESULTS}/fits/{{model}}/fit.nc", model=FITS),
        code=["analysis/fig_diagnostics.py", *FIGURE_CODE],
    output:
        "paper/figures/figS2_diagnostics.pdf",
        "paper/figures/figS2_diagnostics.png",
    shell:
        "python -m analysis.fig_diagnostics {input.fits} paper/figures/figS2_diagnostics"


OCCUPANCY_FITS = [m for m in FITS if m in ("saturation", "saturation_per_subset", "exacerbation")]


rule figure_prior_posterior:
    input:
        fits=expand(f"{RESULTS}/fits/{{model}}/fit.nc", model=OCCUPANCY_FITS),
        identification=expand(f"{RESULTS}/fits/{{model}}/identification.csv", model=OCCUPANCY_FITS),
        code=sources("models", extra=["analysis/fig_prior_posterior.py",
                                      "analysis/fig_diagnostics.py", *FIGURE_CODE]),
    output:
        "paper/figures/figS3_prior_posterior.pdf",
        "paper/figures/figS3_prior_posterior.png",
    shell:
        "python -m analysis.fig_prior_posterior {input.fits} paper/figures/figS3_prior_posterior"


rule figure_ppc_new_subjects:
    input:
        checks=expand(f"{RESULTS}/fits/{{model}}/ppc_new_subjects.csv", model=FITS),
        code=["analysis/fig_ppc_new_subjects.py", "models/schema.py", *FIGURE_CODE],
    output:
        "paper/figures/figS6_ppc_new_subjects.pdf",
        "paper/figures/figS6_ppc_new_subjects.png",
    shell:
        "python -m analysis.fig_ppc_new_subjects {input.checks} paper/figures/figS6_ppc_new_subjects"


rule figure_type_i:
    input:
        expand(f"{RESULTS}/power/{{plan}}/type_i_error.csv", plan=PLANS),
        code=["analysis/fig_type_i_error.py", "analysis/fig_planning.py",
              "analysis/fig_power_curve.py", "simulations/sample_size.py",
              "simulations/summarise.py", "simulations/analyses.py", "models/schema.py",
              *FIGURE_CODE],
    output:
        "paper/figures/figS4_type_i.pdf",
        "paper/figures/figS4_type_i.png",
    shell:
        f"python -m analysis.fig_type_i_error {RESULTS}/power paper/figures/figS4_type_i"


rule figure_cohort_findings:
    input:
        cohort=COHORT,
        frequentist=f"{RESULTS}/frequentist/frequentist.csv",
        findings="data/study_findings.csv",
        config="simulations/configs/kimura2016_cohort.toml",
        code=["analysis/fig_cohort_findings.py", "analysis/frequentist.py", "models/data.py",
              "models/schema.py", "models/validation.py", *FIGURE_CODE],
    output:
        "paper/figures/figS5_cohort_findings.pdf",
        "paper/figures/figS5_cohort_findings.png",
    shell:
        "python -m analysis.fig_cohort_findings {input.cohort} {input.frequentist} "
        "{input.findings} {input.config} paper/figures/figS5_cohort_findings"


rule manuscript:
    input:
        source="paper/manuscript.typ",
        bibliography="paper/references.bib",
        numbers="paper/generated/numbers.json",
        figures=FIGURE_FILES,
        code=["analysis/manuscript.py", "uv.lock"],
    output:
        "paper/manuscript.pdf",
    shell:
        "python -m analysis.manuscript {input.source} {output}"


# The manifest (analysis/manifest.py; `cd49d verify` compares a rebuild with it): every output
# of `rule all` and what it was made from, with SHA-256s, the plans' root seeds, this
# configuration, the locked package versions and the commit. It lists the outputs with
# `snakemake --detailed-summary`, which only warns about the lock this run holds. The commit is
# a parameter, so a new commit (or a work tree that became dirty) rewrites the manifest.
import json
import subprocess


def source_state(wildcards):
    """The commit checked out and whether the work tree differs from it ("unknown" outside
    git)."""
    try:
        commit, changes = (
            subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.strip() + (" (dirty)" if changes.strip() else "")


rule manifest:
    input:
        [path for path in rules.all.input if path != "paper/manifest.json"],
        code=["analysis/manifest.py", "Snakefile", "pipeline.yaml", "uv.lock"],
    output:
        "paper/manifest.json",
    params:
        config=json.dumps({**config, "scale": SCALE, "results": RESULTS}, sort_keys=True),
        source=source_state,
    shell:
        f"python -m analysis.manifest {{output}} --config-json {{params.config:q}} --cores {CORES}"
