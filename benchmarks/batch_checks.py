"""The correctness and scale sections of ``power_throughput.py``: ``--check``,
``--power-check`` and ``--curve``. Each runs in its own child process and prints its report.

- ``posterior_check``: long fits (default 4 chains x 10000 draws) of the same trials by the
  batch backend and by nutpie (``RefitSampler``, 1000 tuning steps); the estimand tables
  (``models.estimands.estimand_table``) compared as differences in units of nutpie's posterior
  SD, for the mean and the 2.5% and 97.5% quantiles, and each over its Monte Carlo SE (from
  both runs' bulk ESS for the mean, ArviZ's quantile MCSE for the quantiles). With both runs
  this long, Monte Carlo error is a few hundredths of an SD, so larger differences would be
  bias; the differences over their MCSE say whether what remains is noise.
- ``power_check``: the power of ``bayes_direction`` per endpoint estimated by both backends on
  the same simulated trials (the engine's seeds), with MCSE; they agree when the difference is
  within 2 x sqrt(mcse_batch^2 + mcse_nutpie^2) (conservative: both are fitted to the same
  trials, so their errors are positively correlated).
- ``curve``: a Bayesian-only power curve (frequentist analyses off, no null run) through
  ``simulations.power.run_plan`` with worker processes, timed from start to summary tables,
  compilation included.
"""

from __future__ import annotations

import math
import tempfile
import time

import numpy as np
import pandas as pd
from bench_common import format_table
from refit_paths import Trial, draw_trials, with_bayesian

#: Posterior variables an estimand table needs (those a model lacks are skipped).
ESTIMAND_VARIABLES = ["pct_pos", "kappa", "saturation_mean", "saturation", "exacerbation_log_or"]
KEYS = ["dataset", "estimand", "group", "subset"]
#: Differences above this many posterior SDs are counted.
SD_TOLERANCE = 0.1
#: The quantiles compared (those of the 95% equal-tailed interval).
QUANTILES = (0.025, 0.975)
#: Differences in units of their Monte Carlo SE: about standard normal if they are noise.
OVER_MCSE = ("mean_over_mcse", "q2.5_over_mcse", "q97.5_over_mcse")
CURVE_TARGET_S = 600.0
CURVE_TARGET_REFITS = 4000


# --- --check: long fits by both backends ---------------------------------------------------


def batch_tables(plan, trials: list[Trial], draws: int) -> tuple[pd.DataFrame, list[str]]:
    """Estimand tables of long batch fits (one batch at a time, to bound memory).

    Returns
    -------
    tuple
        The tables of every trial (column ``dataset``) and each fit's gate outcome and attempts.
    """
    from simulations.bayes import BayesianAnalysis

    analysis = BayesianAnalysis(
        with_bayesian(plan, backend="batch", draws=draws), trials[0].dataset
    )
    sampler, size = analysis.sampler, analysis.sampler.settings.batch_size
    tables, outcomes = [], []
    for start in range(0, len(trials), size):
        chunk = trials[start : start + size]
        fits = sampler.fit(
            [analysis.data_of(t.dataset) for t in chunk], [t.seed_analysis for t in chunk]
        )
        for trial, fit in zip(chunk, fits, strict=True):
            posterior = sampler.posterior(fit, ESTIMAND_VARIABLES)
            tables.append(check_table(posterior, analysis.spec).assign(dataset=trial.replicate))
            outcomes.append(f"{'passed' if fit.passed else 'FAILED'} {'+'.join(fit.attempts)}")
    return pd.concat(tables, ignore_index=True), outcomes


def nutpie_tables(plan, trials: list[Trial], draws: int) -> tuple[pd.DataFrame, list[str]]:
    """Estimand tables of long nutpie fits (``RefitSampler``, the plan's chains, 1000 tuning
    steps), with each fit's gate outcome and target acceptances."""
    from simulations.bayes import BayesianAnalysis

    settings = {"backend": "nutpie", "draws": draws, "tune": 1000}
    analysis = BayesianAnalysis(with_bayesian(plan, **settings), trials[0].dataset)
    tables, outcomes = [], []
    for trial in trials:
        result = analysis.sampler.fit(
            analysis.data_of(trial.dataset),
            seed=trial.seed_analysis,
            thresholds=analysis.thresholds,
        )
        posterior = result.idata["posterior"].to_dataset()
        tables.append(check_table(posterior, analysis.spec).assign(dataset=trial.replicate))
        accepts = "+".join(f"{a:g}" for a in result.attempts)
        outcomes.append(f"{'passed' if result.passed else 'FAILED'} nutpie@{accepts}")
    return pd.concat(tables, ignore_index=True), outcomes


def check_table(posterior, spec) -> pd.DataFrame:
    """The estimand table (``models.estimands.estimand_table``) with the Monte Carlo SE of
    each element's 2.5% and 97.5% quantiles (ArviZ's ``mcse(method="quantile")``)."""
    import arviz as az

    from models.estimands import estimand_draws, estimand_table

    rows = []
    for name, draws in estimand_draws(posterior, spec).items():
        low = az.mcse(draws, method="quantile", prob=QUANTILES[0])
        high = az.mcse(draws, method="quantile", prob=QUANTILES[1])
        for index in np.ndindex(*low.shape):
            at = {dim: low[dim].values[i] for dim, i in zip(low.dims, index, strict=True)}
            rows.append(
                {
                    "estimand": name,
                    "group": at.get("group", at.get("treated_subject", "")),
                    "subset": at.get("subset", ""),
                    "mcse_q2.5": float(low.values[index]),
                    "mcse_q97.5": float(high.values[index]),
                }
            )
    keys = ["estimand", "group", "subset"]
    return estimand_table(posterior, spec).merge(pd.DataFrame(rows), on=keys, validate="1:1")


def standardised_differences(batch: pd.DataFrame, nutpie: pd.DataFrame) -> pd.DataFrame:
    """Per estimand and dataset: (batch - nutpie) / nutpie's posterior SD for the mean and the
    two quantiles, and each difference over its Monte Carlo SE (the mean's from both bulk
    ESS, a quantile's from both runs' quantile MCSE)."""
    merged = batch.merge(nutpie, on=KEYS, suffixes=("_batch", "_nutpie"), validate="one_to_one")
    scale = merged["sd_nutpie"]
    out = merged[KEYS].copy()
    for stat in ("mean", "q2.5", "q97.5"):
        out[stat] = (merged[f"{stat}_batch"] - merged[f"{stat}_nutpie"]) / scale
    mcse = np.sqrt(
        merged["sd_batch"] ** 2 / merged["ess_bulk_batch"]
        + merged["sd_nutpie"] ** 2 / merged["ess_bulk_nutpie"]
    )
    out["mean_over_mcse"] = (merged["mean_batch"] - merged["mean_nutpie"]) / mcse
    for stat in ("q2.5", "q97.5"):
        mcse = np.hypot(merged[f"mcse_{stat}_batch"], merged[f"mcse_{stat}_nutpie"])
        out[f"{stat}_over_mcse"] = (merged[f"{stat}_batch"] - merged[f"{stat}_nutpie"]) / mcse
    return out


def difference_summary(differences: pd.DataFrame) -> list[dict]:
    """Per statistic: the largest |difference|, how many exceed the tolerance, mean and SD."""
    rows = []
    for stat in ("mean", "q2.5", "q97.5", *OVER_MCSE):
        values = differences[stat]
        worst = differences.loc[values.abs().idxmax()]
        counted = stat not in OVER_MCSE
        unit = "posterior SD" if counted else "Monte Carlo SE"
        rows.append(
            {
                "statistic": stat,
                "unit": unit,
                "max_abs": float(values.abs().max()),
                "worst": f"{worst['estimand']}[{worst['group']} {worst['subset']}] "
                f"dataset {worst['dataset']}".replace("[ ", "[").replace(" ]", "]"),
                f"over_{SD_TOLERANCE:g}": int((values.abs() > SD_TOLERANCE).sum())
                if counted
                else None,
                "count": len(values),
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)),
                "se_of_mean": float(values.std(ddof=1) / math.sqrt(len(values))),
            }
        )
    return rows


def per_estimand_bias(differences: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over datasets of each estimand's standardised difference of the mean."""
    grouped = differences.groupby(["estimand", "group", "subset"], sort=False)["mean"]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    table["t"] = table["mean"] / (table["std"] / np.sqrt(table["count"]))
    return table


def posterior_check(plan, *, n: int, datasets: int, draws: int) -> None:
    """Fit ``datasets`` trials with both backends, long, and print how far apart they are."""
    trials = draw_trials(plan, n, range(datasets))
    started = time.perf_counter()
    batch, batch_outcomes = batch_tables(plan, trials, draws)
    batch_s = time.perf_counter() - started
    started = time.perf_counter()
    nutpie, nutpie_outcomes = nutpie_tables(plan, trials, draws)
    nutpie_s = time.perf_counter() - started
    differences = standardised_differences(batch, nutpie)
    chains = plan.analysis.bayesian.chains
    print(f"\n== --check: batch vs nutpie posteriors, {datasets} trials at n = {n} ==")
    print(
        f"{chains} chains x {draws} draws each (batch: its defaults otherwise; nutpie: 1000 "
        f"tuning steps); fitting took {batch_s:.0f} s (batch) and {nutpie_s:.0f} s (nutpie)"
    )
    print(f"gate, batch: {summarise_outcomes(batch_outcomes)}")
    print(f"gate, nutpie: {summarise_outcomes(nutpie_outcomes)}")
    print("\nDifferences (batch - nutpie), over every estimand element and dataset:")
    print(format_table(difference_summary(differences)))
    worst = differences[["mean", "q2.5", "q97.5"]].abs().to_numpy().max()
    over = int((differences[["mean", "q2.5", "q97.5"]].abs() > SD_TOLERANCE).to_numpy().sum())
    print(
        f"\nlargest |difference| {worst:.3f} posterior SD; {over} of "
        f"{3 * len(differences)} exceed {SD_TOLERANCE:g} "
        f"({'none' if over == 0 else 'SOME'} above the tolerance)"
    )
    print(
        "noise, not bias, if each statistic's mean is within about 2 se_of_mean of 0 (the "
        "estimands of one dataset are correlated, so se_of_mean is optimistic) and the "
        "*_over_mcse rows have mean near 0 and SD near 1"
    )
    print("\nPer estimand, standardised difference of the posterior mean over datasets:")
    print(format_table(per_estimand_bias(differences).to_dict("records")))


def summarise_outcomes(outcomes: list[str]) -> str:
    """``'19 passed hmc@0.8, 1 passed hmc@0.8+extend'``: counts of each outcome."""
    counts = pd.Series(outcomes).value_counts()
    return ", ".join(f"{count} {outcome}" for outcome, count in counts.items())


# --- --power-check: power by both backends on the same trials ------------------------------


def direction_successes(plan, trials: list[Trial], backend: str) -> pd.DataFrame:
    """Per trial and endpoint: did ``bayes_direction`` succeed (a failed fit is no success),
    and the trial's status, from one ``analyse_batch`` call of the backend."""
    from simulations.bayes import BayesianAnalysis

    analysis = BayesianAnalysis(with_bayesian(plan, backend=backend), trials[0].dataset)
    per_trial = analysis.analyse_batch(
        [t.dataset for t in trials], [t.seed_analysis for t in trials]
    )
    records = [
        {
            "replicate": trial.replicate,
            "endpoint": row["endpoint"],
            "success": bool(row["success"]) and row["status"] == "ok",
            "status": row["status"],
        }
        for trial, rows in zip(trials, per_trial, strict=True)
        for row in rows
        if row["analysis"] == "bayes_direction"
    ]
    return pd.DataFrame(records)


def power_comparison(n: int, batch: pd.DataFrame, nutpie: pd.DataFrame) -> list[dict]:
    """One row per endpoint: both powers with MCSE, their difference, and agreement."""
    merged = batch.merge(
        nutpie, on=["replicate", "endpoint"], suffixes=("_batch", "_nutpie"), validate="1:1"
    )
    rows = []
    for endpoint, group in merged.groupby("endpoint", sort=False):
        count = len(group)
        power = {b: float(group[f"success_{b}"].mean()) for b in ("batch", "nutpie")}
        mcse = {b: math.sqrt(p * (1 - p) / count) for b, p in power.items()}
        tolerance = 2 * math.sqrt(mcse["batch"] ** 2 + mcse["nutpie"] ** 2)
        difference = power["batch"] - power["nutpie"]
        rows.append(
            {
                "n": n,
                "endpoint": endpoint,
                "replicates": count,
                "power_batch": power["batch"],
                "mcse_batch": mcse["batch"],
                "power_nutpie": power["nutpie"],
                "mcse_nutpie": mcse["nutpie"],
                "difference": difference,
                "tolerance_2mcse": tolerance,
                "agree": abs(difference) <= tolerance,
                "discordant": int((group["success_batch"] != group["success_nutpie"]).sum()),
                "failed_batch": int((group["status_batch"] != "ok").sum()),
                "failed_nutpie": int((group["status_nutpie"] != "ok").sum()),
            }
        )
    return rows


def power_check(plan, *, sizes: list[int], replicates: int) -> None:
    """Estimate ``bayes_direction`` power with both backends on the same trials; print both."""
    rows = []
    for n in sizes:
        trials = draw_trials(plan, n, range(replicates))
        timings = {}
        results = {}
        for backend in ("batch", "nutpie"):
            started = time.perf_counter()
            results[backend] = direction_successes(plan, trials, backend)
            timings[backend] = time.perf_counter() - started
        print(
            f"n = {n}: {replicates} trials; batch {timings['batch']:.0f} s, nutpie "
            f"{timings['nutpie']:.0f} s (compilation included)",
            flush=True,
        )
        rows += power_comparison(n, results["batch"], results["nutpie"])
    print("\n== --power-check: bayes_direction power, batch vs nutpie, same trials ==")
    print("(failed fits count as no success; tolerance = 2 sqrt(mcse_batch^2 + mcse_nutpie^2))")
    print(format_table(rows))
    agree = sum(row["agree"] for row in rows)
    print(f"\n{agree} of {len(rows)} power estimates agree within the tolerance")


# --- --curve: a Bayesian power curve through the engine ------------------------------------


def curve_plan(plan, *, sizes: list[int], replicates: int, per_task: int):
    """The plan, Bayesian only: ``sizes`` x ``replicates`` alternative trials, no null run."""
    from simulations.plan import Plan

    raw = plan.model_dump(mode="json")
    raw["name"] = f"{plan.name}_curve_benchmark"
    raw["trial"]["n"] = sorted(sizes)
    raw["replicates"] = {"initial": replicates, "null": 0, "max": replicates, "per_task": per_task}
    raw["analysis"]["frequentist"] = False
    raw["analysis"]["mixed_model"] = False
    return Plan.model_validate(raw)


def refit_counts(records: pd.DataFrame) -> dict[str, int]:
    """Bayesian refits by status (a refit is one replicate's Bayesian rows)."""
    bayes = records[records["analysis"].str.startswith("bayes_")]
    statuses = bayes.groupby(["cell_id", "replicate"])["status"].agg(
        lambda s: next((v for v in s if v != "ok"), "ok")
    )
    return {str(k): int(v) for k, v in statuses.value_counts().items()}


def power_curve(plan, *, sizes: list[int], replicates: int, per_task: int, workers: int) -> None:
    """Run the Bayesian-only curve through ``run_plan`` into a temporary folder; print the time."""
    from simulations.power import run_plan

    curve = curve_plan(plan, sizes=sizes, replicates=replicates, per_task=per_task)
    with tempfile.TemporaryDirectory(prefix="power_curve_") as out:
        started = time.perf_counter()
        outputs = run_plan(curve, out, workers=workers, progress=False)
        wall_s = time.perf_counter() - started
    counts = refit_counts(outputs.records)
    refits = sum(counts.values())
    failures = refits - counts.get("ok", 0)
    print(f"\n== --curve: Bayesian power curve through run_plan (workers = {workers}) ==")
    print(
        f"n = {sorted(sizes)} x {replicates} replicates (alternative only), per_task "
        f"{per_task}, model {curve.bayes_model}, backend {curve.analysis.bayesian.backend}"
    )
    print(f"wall seconds (compilation included): {wall_s:.1f}")
    print(f"refits: {refits} ({refits / wall_s:.2f} per second); failures: {failures} {counts}")
    if refits == CURVE_TARGET_REFITS:
        verdict = "met" if wall_s <= CURVE_TARGET_S else "NOT met"
    else:
        verdict = f"no verdict (this run had {refits} refits)"
    print(f"target <= {CURVE_TARGET_S:.0f} s for {CURVE_TARGET_REFITS} refits: {verdict}")
    power = outputs.power[outputs.power["analysis"] == "bayes_direction"]
    print("\nbayes_direction power per n (failures counted as no success):")
    print(format_table(power[["endpoint", "n", "n_reps", "power_all"]].to_dict("records")))
