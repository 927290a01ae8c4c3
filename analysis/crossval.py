"""K-fold cross-validation by subject: the model comparison when PSIS-LOO is unreliable.

PSIS-LOO leaves out one subject x subset row; each row has its own subject x subset effect and
thousands of events, so leaving it out removes nearly all the information on that effect and the
Pareto k diagnostics exceed 0.7 for most rows. Leaving out whole subjects asks the question that
matters (how well does the model predict a new patient's CD49d counts?) and needs no importance
sampling: each fold is refitted without its subjects' outcomes (their effects then come from the
population distribution), and the held-out rows are scored with the full model's own
log-likelihood (``pm.stats.compute_log_likelihood``) at the fold's posterior draws.
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
from models.schema import EXACERBATION_COLUMN, PCT_COLUMN

OUTCOME_COLUMNS = ("n_cd49d_pos", "n_cells", PCT_COLUMN)


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
    for column in (*OUTCOME_COLUMNS, EXACERBATION_COLUMN):
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
        else:
            scores = pd.DataFrame(np.nan, index=subjects, columns=["elpd", "effective_draws"])
        status = "ok" if result.passed else "not_converged"
        rows += [
            {
                "model": model_name,
                "subject_id": s,
                "group": groups[s],
                "fold": fold,
                "elpd": scores.at[s, "elpd"],
                "effective_draws": scores.at[s, "effective_draws"],
                "status": status,
            }
            for s in subjects
        ]
        on_fold()
    return pd.DataFrame(rows)


def compare_kfold(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Summed elpd per model with SE, paired differences to the best model, and how many draws
    carried the held-out estimates.

    Only subjects scored under every model enter the sums; ``n_not_converged`` says how many
    were lost to failed folds.
    """
    wide = per_subject.pivot(index="subject_id", columns="model", values="elpd")
    draws_behind = per_subject.pivot(index="subject_id", columns="model", values="effective_draws")
    scored = wide.dropna()
    totals = scored.sum()
    best = totals.idxmax()
    rows = []
    for model in wide.columns:
        diff = scored[model] - scored[best]
        rows.append(
            {
                "model": model,
                "elpd_kfold": totals[model],
                "se": float(np.sqrt(len(scored)) * scored[model].std(ddof=1)),
                "elpd_diff": float(diff.sum()),
                "se_diff": float(np.sqrt(len(scored)) * diff.std(ddof=1)),
                "n_subjects": len(scored),
                "n_not_converged": int(wide[model].isna().sum()),
                "median_effective_draws": float(draws_behind[model].median()),
                "min_effective_draws": float(draws_behind[model].min()),
            }
        )
    return pd.DataFrame(rows).sort_values("elpd_kfold", ascending=False, ignore_index=True)
