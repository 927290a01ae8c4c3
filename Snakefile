# The pipeline: cohort -> fits -> model comparison -> power and SBC -> numbers -> manuscript.
# The one place where the dependencies are declared. Rules call `cd49d` commands and the
# analysis scripts; no analysis logic lives here. Every rule lists the code it runs among its
# inputs, so that a change of model, simulation or analysis code (or of the lock file: the
# package versions) reruns what depends on it, and nothing else.
#
#   snakemake --cores 2                  # what `make reproduce` runs
#   snakemake --cores 2 --config scale=full
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
]


rule all:
    input:
        "paper/manuscript.pdf",
        RESULT_FILES,


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


rule fit:
    input:
        cohort=COHORT,
        code=FIT_CODE,
    output:
        f"{RESULTS}/fits/{{model}}/fit.nc",
        f"{RESULTS}/fits/{{model}}/estimands.csv",
    params:
        out=lambda wildcards: f"{RESULTS}/fits/{wildcards.model}",
    threads: 2
    shell:
        "cd49d fit {input.cohort} --model {wildcards.model} --out {params.out}"


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
    "--no-figures --no-progress"
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
    threads: CORES
    shell:
        "cd49d sbc --model {wildcards.model} --draws {params.draws} --out {params.out} "
        "--workers {threads} --no-progress"


rule sample_size_validation:
    input:
        plans=sorted(str(p) for p in Path("simulations/plans").glob("*.toml")),
        code=["simulations/sample_size.py", "simulations/sample_size_validation.py",
              "analysis/tab_sample_size_validation.py", "uv.lock"],
    output:
        f"{RESULTS}/sample_size_validation.csv",
    params:
        runs=SIZES["sample_size_runs"],
    shell:
        "python -m analysis.tab_sample_size_validation {output} --runs {params.runs}"


rule numbers:
    input:
        f"{RESULTS}/frequentist/frequentist.csv",
        expand(f"{RESULTS}/fits/{{model}}/estimands.csv", model=FITS),
        f"{RESULTS}/fits/loo_kappa.csv",
        expand(f"{RESULTS}/power/{{plan}}/sample_size.csv", plan=PLANS),
        expand(f"{RESULTS}/sbc/{{model}}/sbc_summary.csv", model=SBC_MODELS),
        cohort=COHORT,
        code=["analysis/numbers.py", "uv.lock"],
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


rule manuscript:
    input:
        source="paper/manuscript.typ",
        bibliography="paper/references.bib",
        numbers="paper/generated/numbers.json",
        figures=["paper/figures/fig1_data.pdf", "paper/figures/fig4_planning.pdf"],
        code=["analysis/manuscript.py", "uv.lock"],
    output:
        "paper/manuscript.pdf",
    shell:
        "python -m analysis.manuscript {input.source} {output}"
