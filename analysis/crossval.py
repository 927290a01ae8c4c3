"""K-fold cross-validation by subject: the model comparison when PSIS-LOO is unreliable.

PSIS-LOO leaves out one subject x subset row; each row has its own subject x subset effect and
thousands of events, so leaving it out removes nearly all the information on that effect and the
Pareto k diagnostics exceed 0.7 for most rows. Leaving out whole subjects asks the question that
matters (how well does the model predict a new patient's CD49d counts?) and needs no importance
sampling: each fold is refitted without its subjects' outcomes (their effects then come from the
population distribution), and the held-out rows are scored with the full model's own graph at
the fold's posterior draws.

Two scores per held-out subject:

- ``crps`` (the criterion): the continuous ranked probability score of each held-out positive
  rate (percentage points), from the full model's posterior predictive counts, summed over the
  subject's subsets. Proper, and estimated precisely from the predictive draws.
- ``elpd``: log mean over draws of the joint predictive density of the subject's counts
  (``pm.stats.compute_log_likelihood``). With thousands of events per gate the density is so
  peaked that a few draws carry the mean; ``effective_draws`` reports how many, and with few
  the elpd is noisy and biased low: a diagnostic, not the criterion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pymc as pm
from scipy.special import logsumexp

from models.data import Cohort
from models.diagnostics import Thresholds
from models.fit import SamplerSettings, fit_gated
from models.registry import MODELS
from models.schema import EXACERBATION_COLUMN, MFI_COLUMN, PCT_COLUMN

#: A held-out subject's measurements (its MFI gate value stays: a design value, unused alone).
OUTCOME_COLUMNS = ("n_cd49d_pos", "n_cells", PCT_COLUMN, MFI_COLUMN)


def subject_folds(cohort: Cohort, k: int, seed: int) -> list[list[str]]:
    """Split subjects into k folds, stratified by group (each group spread evenly), seeded."""
    if not 2 <= k <= len(cohort.subjects):
        raise ValueError(
            f"folds must be between 2 and the number of subjects ({len(cohort.subjects)}), got {k}"
        )
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    position = 0
    for _, subjects in cohort.subjects.groupby("group", observed=True, sort=True):
        for subject in rng.permutation(subjects["subject_id"].to_numpy()):
            folds[position % k].append(str(subject))
            position += 1
    return folds


def without_outcomes(cohort: Cohort, subjects: list[str]) -> Cohort:
    """The cohort with the outcomes of ``subjects`` blanked (they stay in the model's coords)."""
    rows = cohort.rows.copy()
    held_out = rows["subject_id"].isin(subjects)
    for column in [c for c in (*OUTCOME_COLUMNS, EXACERBATION_COLUMN) if c in rows.columns]:
        rows.loc[held_out, column] = np.nan
    rows = rows.drop(columns=["has_counts", "positive_rate"])
    return Cohort.from_frame(
        rows.astype({"group": str, "subset": str}),
        cohort.spec,
        source=f"{cohort.source} without {len(subjects)} subjects",
    )


def held_out_elpd(full_model: pm.Model, idata, cohort: Cohort, subjects: list[str]) -> pd.DataFrame:
    """Per held-out subject: log mean over draws of its joint predictive density of its counts,
    and the effective number of draws behind that mean, (sum w)^2 / sum w^2 (a few draws
    carrying the mean means a noisy, downward-biased elpd)."""
    with full_model:
        log_lik = pm.stats.compute_log_likelihood(
            idata, var_names=["n_cd49d_pos"], extend_inferencedata=False, progressbar=False
        )
    values = log_lik["n_cd49d_pos"].stack(sample=("chain", "draw")).transpose(..., "sample")
    row_subject = np.array([str(label).split(":")[0] for label in values["count_row"].values])
    rows = {}
    for subject in subjects:
        per_draw = values.values[row_subject == subject].sum(axis=0)
        rows[subject] = {
            "elpd": float(logsumexp(per_draw) - np.log(per_draw.size)),
            "effective_draws": float(np.exp(2 * logsumexp(per_draw) - logsumexp(2 * per_draw))),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def crps_from_draws(draws: np.ndarray, observed: float) -> float:
    """Continuous ranked probability score of a predictive sample (lower is better).

    CRPS = E|X - y| - E|X - X'| / 2, with E|X - X'| from the sorted sample in O(S log S).
    """
    x = np.sort(np.asarray(draws, dtype=float))
    s = x.size
    spread = 2.0 * np.sum((2 * np.arange(1, s + 1) - s - 1) * x) / s**2
    return float(np.mean(np.abs(x - observed)) - spread / 2)


def held_out_crps(
    full_model: pm.Model, idata, cohort: Cohort, subjects: list[str], *, seed: int
) -> pd.Series:
    """Per held-out subject: summed CRPS (percentage points) of its positive rates, from the full
    model's posterior predictive counts at the fold's draws (held-out effects from the
    population)."""
    with full_model:
        predictive = pm.sample_posterior_predictive(
            idata,
            var_names=["n_cd49d_pos"],
            extend_inferencedata=False,
            progressbar=False,
            random_seed=seed,
        )
    counts = predictive["posterior_predictive"]["n_cd49d_pos"].stack(sample=("chain", "draw"))
    labels = [str(label) for label in counts["count_row"].values]
    rows = cohort.rows.assign(
        label=[f"{r.subject_id}:{r.subset}" for r in cohort.rows.itertuples()]
    )
    rows = rows.set_index("label")
    totals = dict.fromkeys(subjects, 0.0)
    for position, label in enumerate(labels):
        subject = label.split(":")[0]
        if subject not in totals:
            continue
        n_cells = rows.at[label, "n_cells"]
        predicted = 100 * counts.values[position] / n_cells
        totals[subject] += crps_from_draws(predicted, 100 * rows.at[label, "positive_rate"])
    return pd.Series(totals, name="crps")


def kfold_by_subject(
    cohort: Cohort,
    model_name: str,
    *,
    k: int,
    seed: int,
    settings: SamplerSettings,
    thresholds: Thresholds,
    on_fold: Callable[[], None] = lambda: None,
) -> pd.DataFrame:
    """Cross-validated elpd per subject for one model.

    Returns
    -------
    pandas.DataFrame
        ``model, subject_id, group, fold, elpd, effective_draws, status`` (status ``ok`` or
        ``not_converged``: a fold whose fit fails the gate leaves its subjects' elpd blank; they
        are never silently dropped).
    """
    spec = MODELS[model_name]
    spec.check(cohort)
    full_model = spec.build(cohort)
    groups = cohort.subjects.set_index("subject_id")["group"].astype(str)
    rows = []
    for fold, subjects in enumerate(subject_folds(cohort, k, seed)):
        training = without_outcomes(cohort, subjects)
        result = fit_gated(
            lambda t=training: spec.build(t),
            settings,
            thresholds,
            seed=seed + 1 + fold,
            with_checks=False,
        )
        if result.passed:
            scores = held_out_elpd(full_model, result.idata, cohort, subjects)
            scores["crps"] = held_out_crps(
                full_model, result.idata, cohort, subjects, seed=seed + 1000 + fold
            )
        else:
            scores = pd.DataFrame(
                np.nan, index=subjects, columns=["elpd", "effective_draws", "crps"]
            )
        status = "ok" if result.passed else "not_converged"
        rows += [
            {
                "model": model_name,
                "subject_id": s,
                "group": groups[s],
                "fold": fold,
                "crps": scores.at[s, "crps"],
                "elpd": scores.at[s, "elpd"],
                "effective_draws": scores.at[s, "effective_draws"],
                "status": status,
            }
            for s in subjects
        ]
        on_fold()
    return pd.DataFrame(rows)


def compare_kfold(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Per model: summed CRPS (the criterion; lower is better) and summed elpd, each with its
    SE and its paired difference to the best model, and the draws behind the elpd.

    Only subjects scored under every model enter the sums; ``n_not_converged`` says how many
    were lost to failed folds. SEs are sqrt(n) x the SD over subjects (Vehtari et al. 2017).
    """
    crps = per_subject.pivot(index="subject_id", columns="model", values="crps")
    elpd = per_subject.pivot(index="subject_id", columns="model", values="elpd")
    draws_behind = per_subject.pivot(index="subject_id", columns="model", values="effective_draws")
    scored = crps.dropna().index
    n = len(scored)
    best_crps = crps.loc[scored].sum().idxmin()
    best_elpd = elpd.loc[scored].sum().idxmax()
    rows = []
    for model in crps.columns:
        crps_diff = crps.loc[scored, model] - crps.loc[scored, best_crps]
        elpd_diff = elpd.loc[scored, model] - elpd.loc[scored, best_elpd]
        rows.append(
            {
                "model": model,
                "crps": float(crps.loc[scored, model].sum()),
                "crps_se": float(np.sqrt(n) * crps.loc[scored, model].std(ddof=1)),
                "crps_diff": float(crps_diff.sum()),
                "crps_diff_se": float(np.sqrt(n) * crps_diff.std(ddof=1)),
                "elpd": float(elpd.loc[scored, model].sum()),
                "elpd_se": float(np.sqrt(n) * elpd.loc[scored, model].std(ddof=1)),
                "elpd_diff": float(elpd_diff.sum()),
                "elpd_diff_se": float(np.sqrt(n) * elpd_diff.std(ddof=1)),
                "median_effective_draws": float(draws_behind.loc[scored, model].median()),
                "n_subjects": n,
                "n_not_converged": int(crps[model].isna().sum()),
            }
        )
    return pd.DataFrame(rows).sort_values("crps", ignore_index=True)
