"""Analyse: the per-replicate analyses of a simulated trial, each returning result rows.

Every endpoint is tested one-sided, in the direction the study reported or the question
hypothesises: the CD49d ratio rises under natalizumab, Treg lose relatively more CD49d+ cells
(``differential_reduction``), Treg lose more detectable CD49d per unit occupancy than the
effector subset (``kappa_difference``), exacerbations rise with the ratio. Every test's
``nominal_level`` is the plan's ``one_sided_alpha`` (default 0.025: the same as a two-sided
test at 0.05 that must also have the hypothesised sign, and as the Bayesian direction rule's
``1 - 0.975``), so that frequentist and Bayesian rows compare in one table. A significant
result in the wrong direction is not a success. Rates are always computed from the counts, so
a saved dataset reproduces every number.

Each rate endpoint has a per-subject contrast on its own scale (``CONTRASTS``): the log CD49d
ratio ``log(p_e / p_Treg)`` for ``ratio_fold_change`` and ``differential_reduction``, and the
probit difference ``probit(p_e) - probit(p_Treg)`` for ``kappa_difference``. The probit scale
is the latent-expression model's: one kappa for every subset shifts every subset's probit rate
by the same amount, so on that scale, and only there, a shared kappa is *no* interaction. On
the logit or log scale the same shared kappa is an interaction (Treg sit far below the gate's
median, where a probit shift moves the log rate most): reading a log-scale interaction as
evidence that natalizumab acts differently on Treg is the trap the mechanism question avoids
(``tests/test_power.py`` shows both).

- Study test (``mann_whitney``, ``wilcoxon``, ``logistic_lr``): cross-sectional: Mann-Whitney U
  of the per-subject contrast, natalizumab > naive (scipy's exact distribution for small
  samples); a differential reduction has no per-subject value in a cross-sectional design, so
  it is tested by the same between-arm contrast of the log ratio (the two endpoints share their
  sign). Paired: Wilcoxon signed-rank of the within-patient change (of the contrast, or the
  reduction in Treg minus that in the effector subset), greater than 0. Prognostic: logistic
  regression of exacerbation on the standardised observed log CD49d ratio (mean over effector
  subsets), the signed root of the likelihood-ratio statistic (``logistic_wald``: the Wald z).
- MFI tests (``mann_whitney_mfi``, ``wilcoxon_mfi``; plans that measure ``mfi``,
  ``kappa_difference`` endpoints): the same rank tests of the per-subject contrast of median
  log fluorescence, ``log(mfi_e / gate_e) - log(mfi_Treg / gate_Treg)``: the difference of the
  two subsets' locations of log CD49d, in log units. Natalizumab moves each subset's location by
  ``log(1 - kappa_s rho)`` whatever the spread, so under one shared kappa the contrast does not
  move, even where sigma differs by subset, the case in which the probit contrast moves without
  any difference in kappa (``tests/test_power.py``).
- ``mixed_model``: ``statsmodels`` MixedLM of the endpoint's scale of the positive rate
  (log or probit of ``(k + 0.5) / (n + 1)``). Cross-sectional and paired: the endpoint's two
  subsets, fixed effects subset x natalizumab, a random intercept per patient (paired: per
  patient x subset, the unit within which the before/after contrast lies); the interaction is
  the log ratio fold change (log scale) or the probit-shift difference (probit scale), Wald t
  test (between-within degrees of freedom, see ``mixed_model``). Prognostic (two-stage):
  MixedLM of the treated patients' log rates, random intercept per patient x subset; each
  patient's log ratio is taken from the fitted rates (fixed effects plus BLUPs, shrunk toward
  the subset means by their binomial noise), then the signed likelihood-ratio test as above.
  Stage 1's uncertainty is not carried into stage 2 (with thousands of cells per gate it is
  small).
- ``bayes_*``: see ``simulations.bayes``.

A result row: ``endpoint, analysis, nominal_level, estimate, std_error, ci_low, ci_high,
p_value, posterior_prob, success, status, error_type, error_message, sampler`` (``batch`` or
``nutpie`` for a Bayesian fit, ``simulations.bayes``; empty otherwise). ``std_error`` and the
95% interval ``[ci_low, ci_high]`` are the analysis's own (mixed model: Wald with the t
reference above; logistic: Wald z; Bayesian: posterior SD and equal-tailed interval); the rank
tests give none (their ``estimate`` is a difference of medians, reported for bias and
empirical SE only). ``status`` is ``ok`` or ``error``; an error is a result.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from models.data import log_mfi_ratio
from models.schema import NAIVE_GROUP, TREATED_GROUP

REFERENCE = "Treg"


#: What each analysis's ``estimate`` targets, and the true value it is compared with in
#: ``performance.csv`` (``simulations.observable.estimand_truths``).
ESTIMATE_OF = {
    "mann_whitney": "difference of the arms' median subject contrasts",
    "wilcoxon": "median within-patient change of the subject contrast",
    "mann_whitney_mfi": "difference of the arms' median subject contrasts of log MFI",
    "wilcoxon_mfi": "median within-patient change of the subject contrast of log MFI",
    "mixed_model": "subset x natalizumab interaction, conditional on the patient, endpoint scale",
    "logistic_lr": "log odds ratio per SD of the observed log ratio",
    "logistic_wald": "log odds ratio per SD of the observed log ratio",
    "bayes": "posterior mean of the population-averaged estimand",
}


def probit_rate(successes, trials):
    """Probit of the continuity-corrected rate ``(k + 0.5) / (n + 1)`` (finite at 0 and n)."""
    return stats.norm.ppf((np.asarray(successes) + 0.5) / (np.asarray(trials) + 1.0))


def log_rate(successes, trials):
    """Log of the continuity-corrected rate ``(k + 0.5) / (n + 1)``."""
    return np.log((np.asarray(successes) + 0.5) / (np.asarray(trials) + 1.0))


#: The scale of each endpoint's per-subject contrast and mixed model, by endpoint prefix.
SCALES = {
    "ratio_fold_change_": log_rate,
    "differential_reduction_": log_rate,
    "kappa_difference_": probit_rate,
}


def endpoint_scale(endpoint: str):
    """The transform of (successes, trials) on which an endpoint is a difference."""
    for prefix, scale in SCALES.items():
        if endpoint.startswith(prefix):
            return scale
    raise ValueError(f"endpoint {endpoint!r} has no rate scale")


def endpoint_subset(endpoint: str) -> str:
    """The effector subset an endpoint compares with Treg."""
    if endpoint.startswith("ratio_fold_change_"):
        return endpoint.removeprefix("ratio_fold_change_").removesuffix(f"_{REFERENCE}")
    for prefix in ("differential_reduction_", "kappa_difference_"):
        if endpoint.startswith(prefix):
            return endpoint.removeprefix(f"{prefix}{REFERENCE}_")
    raise ValueError(f"endpoint {endpoint!r} has no effector subset")


def result_row(endpoint: str, analysis: str, nominal_level: float, **values) -> dict:
    row = {
        "endpoint": endpoint,
        "analysis": analysis,
        "nominal_level": nominal_level,
        "estimate": np.nan,
        "std_error": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "p_value": np.nan,
        "posterior_prob": np.nan,
        "success": False,
        "status": "ok",
        "error_type": "",
        "error_message": "",
        "sampler": "",
    }
    row.update(values)
    return row


def guarded(endpoint: str, analysis: str, nominal_level: float, compute) -> dict:
    """Run one analysis; an exception or a non-finite result becomes an ``error`` row."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # failures are judged by convergence and finiteness
            values = compute()
        if not np.isfinite(values["p_value"]):
            raise FloatingPointError("the test statistic is not finite")
    except Exception as err:
        return result_row(
            endpoint,
            analysis,
            nominal_level,
            status="error",
            error_type=type(err).__name__,
            error_message=str(err).splitlines()[0][:300] if str(err) else type(err).__name__,
        )
    success = bool(values["p_value"] < nominal_level)  # one-sided p: the direction included
    return result_row(endpoint, analysis, nominal_level, success=success, **values)


def rates(dataset: pd.DataFrame) -> pd.DataFrame:
    """Positive rate from counts per subject, one column per subset, with group and patient."""
    frame = dataset.assign(rate=dataset["n_cd49d_pos"] / dataset["n_cells"])
    return subject_wide(frame, "rate")


def subject_wide(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per subject (first-seen order), a column per subset, with group and patient."""
    wide = frame.pivot(index="subject_id", columns="subset", values=value)
    keys = ["group", "exacerbation"] + (["patient_id"] if "patient_id" in frame else [])
    subject = frame.groupby("subject_id", sort=False)[keys].first()
    return subject.join(wide).loc[frame["subject_id"].unique()]


def log_ratio(wide: pd.DataFrame, subset: str) -> pd.Series:
    return np.log(wide[subset] / wide[REFERENCE])


def subject_contrasts(dataset: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """Per subject, the endpoint's contrast (effector minus Treg on its scale) in ``contrast``.

    Ratio endpoints use the raw rates' log ratio (the study's quantity); ``kappa_difference``
    the probit difference of continuity-corrected rates.
    """
    subset = endpoint_subset(endpoint)
    if endpoint.startswith("kappa_difference_"):
        frame = dataset.assign(scaled=probit_rate(dataset["n_cd49d_pos"], dataset["n_cells"]))
        wide = subject_wide(frame, "scaled")
        return wide.assign(contrast=wide[subset] - wide[REFERENCE])
    wide = rates(dataset)
    return wide.assign(contrast=log_ratio(wide, subset))


def mfi_contrasts(dataset: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """Per subject, the contrast of log MFI relative to the gate, effector minus Treg."""
    subset = endpoint_subset(endpoint)
    frame = dataset.assign(scaled=log_mfi_ratio(dataset))
    wide = subject_wide(frame, "scaled")
    return wide.assign(contrast=wide[subset] - wide[REFERENCE])


def mann_whitney(dataset: pd.DataFrame, endpoint: str, *, alpha: float, mfi: bool = False) -> dict:
    """Mann-Whitney U of the per-subject contrast (of rates, or of log MFI), natalizumab
    greater than naive."""

    def compute():
        wide = (mfi_contrasts if mfi else subject_contrasts)(dataset, endpoint)
        treated = wide.loc[wide["group"] == TREATED_GROUP, "contrast"].to_numpy()
        naive = wide.loc[wide["group"] == NAIVE_GROUP, "contrast"].to_numpy()
        test = stats.mannwhitneyu(treated, naive, alternative="greater", method="auto")
        return {"estimate": float(np.median(treated) - np.median(naive)), "p_value": test.pvalue}

    return guarded(endpoint, "mann_whitney_mfi" if mfi else "mann_whitney", alpha, compute)


def paired_changes(dataset: pd.DataFrame, endpoint: str, *, mfi: bool = False) -> np.ndarray:
    """Per patient: change of the contrast (of rates, or of log MFI), or reduction in Treg minus
    in the effector subset."""
    if mfi:
        before, after = before_after(mfi_contrasts(dataset, endpoint), ["contrast"])
        return (after["contrast"] - before["contrast"]).to_numpy()
    if endpoint.startswith("differential_reduction_"):
        wide = rates(dataset)
        columns = [endpoint_subset(endpoint), REFERENCE]
        before, after = before_after(wide, columns)
        reduction = 1 - after / before
        return (reduction[REFERENCE] - reduction[columns[0]]).to_numpy()
    before, after = before_after(subject_contrasts(dataset, endpoint), ["contrast"])
    return (after["contrast"] - before["contrast"]).to_numpy()


def before_after(wide: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each patient's values before and under natalizumab, aligned by patient."""
    before = wide[wide["group"] == NAIVE_GROUP].set_index("patient_id")[columns]
    after = wide[wide["group"] == TREATED_GROUP].set_index("patient_id").loc[before.index]
    return before, after[columns]


def wilcoxon(dataset: pd.DataFrame, endpoint: str, *, alpha: float, mfi: bool = False) -> dict:
    """Wilcoxon signed-rank test of the within-patient change (of rates, or of log MFI),
    greater than 0."""

    def compute():
        change = paired_changes(dataset, endpoint, mfi=mfi)
        test = stats.wilcoxon(change, alternative="greater", method="auto")
        return {"estimate": float(np.median(change)), "p_value": test.pvalue}

    return guarded(endpoint, "wilcoxon_mfi" if mfi else "wilcoxon", alpha, compute)


def standardised_log_ratio(dataset: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Exacerbation and the standardised mean log ratio of the treated patients."""
    wide = rates(dataset)
    treated = wide[wide["group"] == TREATED_GROUP]
    effectors = [c for c in treated.columns if c in ("Th1", "Th17")]
    mean_log = np.mean([log_ratio(treated, e) for e in effectors], axis=0)
    z = (mean_log - mean_log.mean()) / mean_log.std()
    return treated["exacerbation"].to_numpy(dtype=float), z


def logistic(dataset: pd.DataFrame, endpoint: str, *, alpha: float) -> list[dict]:
    """Logistic regression of exacerbation on the standardised log ratio: LR and Wald tests."""
    fitted: dict = {}

    def fit() -> sm.regression.linear_model.RegressionResults:
        if "result" not in fitted:
            events, z = standardised_log_ratio(dataset)
            if events.min() == events.max():
                raise ValueError(f"every patient has exacerbation = {int(events[0])}")
            fitted["result"] = sm.Logit(events, sm.add_constant(z)).fit(disp=0, maxiter=100)
            if not fitted["result"].mle_retvals["converged"]:
                raise RuntimeError("logistic regression did not converge (separation?)")
        return fitted["result"]

    def likelihood_ratio():
        result = fit()
        return {**slope_interval(result), "p_value": signed_lr_pvalue(result)}

    def wald():
        result = fit()
        z_value = float(result.params[1] / result.bse[1])
        return {**slope_interval(result), "p_value": float(stats.norm.sf(z_value))}

    return [
        guarded(endpoint, "logistic_lr", alpha, likelihood_ratio),
        guarded(endpoint, "logistic_wald", alpha, wald),
    ]


def slope_interval(result) -> dict:
    """A logistic regression's slope, its standard error and 95% Wald interval."""
    estimate, error = float(result.params[1]), float(result.bse[1])
    half = stats.norm.isf(0.025) * error
    return {
        "estimate": estimate,
        "std_error": error,
        "ci_low": estimate - half,
        "ci_high": estimate + half,
    }


def signed_lr_pvalue(result) -> float:
    """One-sided p of a positive slope: the signed root of the likelihood-ratio statistic,
    ``sign(beta) sqrt(LR)``, against the standard normal."""
    root = np.sign(result.params[1]) * np.sqrt(max(float(result.llr), 0.0))
    return float(stats.norm.sf(root))


def mixed_model_frame(dataset: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """The endpoint's two subsets, the response on its scale (column ``response``)."""
    subset = endpoint_subset(endpoint)
    rows = dataset[dataset["subset"].isin([subset, REFERENCE])].copy()
    rows["response"] = endpoint_scale(endpoint)(rows["n_cd49d_pos"], rows["n_cells"])
    rows["effector"] = (rows["subset"] == subset).astype(float)
    rows["treated"] = (rows["group"] == TREATED_GROUP).astype(float)
    rows["patient"] = rows["patient_id"] if "patient_id" in rows else rows["subject_id"]
    return rows


def interaction_design(rows: pd.DataFrame) -> pd.DataFrame:
    """The fixed effects ``effector * treated`` as the formula would build them (same columns,
    names and values; built directly, as the formula's parsing took a fifth of each fit)."""
    design = rows[["effector", "treated"]].astype(float)
    design.insert(0, "Intercept", 1.0)
    design["effector:treated"] = design["effector"] * design["treated"]
    return design


def mixed_model(dataset: pd.DataFrame, endpoint: str, *, alpha: float, paired: bool) -> dict:
    """MixedLM of the endpoint's scale of the rates; the effector x natalizumab interaction,
    one-sided Wald t test (greater than 0).

    The reference is Student's t with between-within degrees of freedom (patients - 2;
    paired: patients - 1), the exact t test's for balanced data: with z (statsmodels' default)
    the rejection rate under the null was 0.15 at 4 paired patients (100 simulated trials).
    """

    def compute():
        rows = mixed_model_frame(dataset, endpoint)
        # Paired: the contrast lies within patient x subset units, so a random intercept per
        # unit carries the pairing (and the patient level with it).
        units = rows["patient"] + ":" + rows["subset"] if paired else rows["patient"]
        result = fit_mixed(sm.MixedLM(rows["response"], interaction_design(rows), groups=units))
        patients = rows["patient"].nunique()
        df = patients - 1 if paired else patients - 2
        t_value = float(result.tvalues["effector:treated"])
        estimate = float(result.params["effector:treated"])
        error = float(result.bse["effector:treated"])
        half = stats.t.isf(0.025, df) * error
        return {
            "estimate": estimate,
            "std_error": error,
            "ci_low": estimate - half,
            "ci_high": estimate + half,
            "p_value": float(stats.t.sf(t_value, df)),
        }

    return guarded(endpoint, "mixed_model", alpha, compute)


def blup_log_ratio(dataset: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Exacerbation and the standardised log ratio from a MixedLM's fitted rates (stage 1)."""
    rows = dataset[dataset["group"] == TREATED_GROUP].copy()
    rows["log_rate"] = log_rate(rows["n_cd49d_pos"], rows["n_cells"])
    rows["unit"] = rows["subject_id"] + ":" + rows["subset"]
    result = fit_mixed(smf.mixedlm("log_rate ~ 0 + C(subset)", rows, groups=rows["unit"]))
    effects = pd.Series({unit: float(re.iloc[0]) for unit, re in result.random_effects.items()})
    fixed = rows["subset"].map(lambda subset: result.params[f"C(subset)[{subset}]"])
    rows["fitted"] = fixed + rows["unit"].map(effects)
    wide = rows.pivot(index="subject_id", columns="subset", values="fitted")
    wide = wide.loc[rows["subject_id"].unique()]
    effectors = [c for c in wide.columns if c in ("Th1", "Th17")]
    mean_log = np.mean([wide[e] - wide[REFERENCE] for e in effectors], axis=0)
    events = rows.groupby("subject_id", sort=False)["exacerbation"].first().to_numpy(float)
    return events, (mean_log - mean_log.mean()) / mean_log.std()


def two_stage_logistic(dataset: pd.DataFrame, endpoint: str, *, alpha: float) -> dict:
    """Stage 1 MixedLM, stage 2 logistic regression likelihood-ratio test."""

    def compute():
        events, z = blup_log_ratio(dataset)
        if events.min() == events.max():
            raise ValueError(f"every patient has exacerbation = {int(events[0])}")
        result = sm.Logit(events, sm.add_constant(z)).fit(disp=0, maxiter=100)
        if not result.mle_retvals["converged"]:
            raise RuntimeError("logistic regression did not converge (separation?)")
        return {**slope_interval(result), "p_value": signed_lr_pvalue(result)}

    return guarded(endpoint, "mixed_model", alpha, compute)


def fit_mixed(model: smf.mixedlm) -> sm.regression.mixed_linear_model.MixedLMResults:
    """REML fit by BFGS, then Powell if BFGS fails (a variance at its boundary, say)."""
    failure = "MixedLM did not converge"
    for method in ("bfgs", "powell"):
        try:
            result = model.fit(reml=True, method=method)
        except (np.linalg.LinAlgError, ValueError) as err:
            failure = f"MixedLM ({method}): {err}"
            continue
        if result.converged:
            return result
    raise RuntimeError(failure)


def frequentist_analyses(design: str, *, mixed: bool, mfi: bool = False) -> tuple[str, ...]:
    """The frequentist analyses ``frequentist_rows`` runs for a design, by name (``mfi``: the
    rank test of log MFI too)."""
    study = {
        "cross_sectional": ("mann_whitney",),
        "paired": ("wilcoxon",),
        "prognostic": ("logistic_lr", "logistic_wald"),
    }[design]
    names = (*study, "mixed_model") if mixed else study
    return (*names, f"{study[0]}_mfi") if mfi else names


def planned_rules(endpoints: list[str], rules) -> list[tuple[str, str, float]]:
    """``(endpoint, bayes_<rule>, nominal_level)`` of a plan's Bayesian decision rules
    (``rules``: ``simulations.plan.Bayesian``); only the direction rule has a nominal level."""
    return [
        (
            endpoint,
            f"bayes_{rule}",
            1 - rules.direction_threshold if rule == "direction" else np.nan,
        )
        for endpoint in endpoints
        for rule in rules.rules
    ]


def failure_rows(
    planned: list[tuple[str, str, float]], status: str, error_type: str, message: str
) -> list[dict]:
    """One failed row per planned ``(endpoint, analysis, nominal_level)``."""
    return [
        result_row(
            endpoint,
            analysis,
            nominal_level,
            status=status,
            error_type=error_type,
            error_message=message[:300],
        )
        for endpoint, analysis, nominal_level in planned
    ]


def frequentist_rows(
    dataset: pd.DataFrame,
    *,
    design: str,
    endpoints: list[str],
    alpha: float,
    mixed: bool,
    mfi: bool = False,
) -> list[dict]:
    """Every frequentist analysis of one simulated trial, one row per (endpoint, analysis), in
    the order of ``frequentist_analyses``."""
    rows: list[dict] = []
    for endpoint in endpoints:
        if design == "prognostic":
            rows += logistic(dataset, endpoint, alpha=alpha)
            if mixed:
                rows.append(two_stage_logistic(dataset, endpoint, alpha=alpha))
            continue
        test = mann_whitney if design == "cross_sectional" else wilcoxon
        rows.append(test(dataset, endpoint, alpha=alpha))
        if mixed:
            paired = design == "paired"
            rows.append(mixed_model(dataset, endpoint, alpha=alpha, paired=paired))
        if mfi:
            rows.append(test(dataset, endpoint, alpha=alpha, mfi=True))
    return rows
