"""Prior and posterior predictive checks: group x subset positive rates against the data.

Two posterior checks, both drawn on the fitted model's own graph
(``pm.sample_posterior_predictive``):

- the *replayed* check (``ppc_posterior.png``): each posterior draw's own subject effects with
  fresh binomial counts. Each subject's effects are fitted to that subject's thousands of
  events, so its replicated rates sit on its observed ones and the check can hardly fail;
- the *new-subject* check (``new_subject_check``, ``ppc_new_subjects.csv``): at each posterior
  draw every subject-level variable (the subject vectors, the visit contrasts, the treated
  patients' occupancies) is redrawn from its population distribution given that draw's
  hyperparameters, then counts from each real row's ``n_cells``. It asks whether the cohort's
  spread of subjects looks like a sample from the fitted population, and can fail.

The prior check and the replayed check compare the median over a group's subjects of the
subject positive rate, per subset (the figure: its predictive 50% and 90% intervals, the
observed value, and the observed subjects); the new-subject check compares that median and the
interquartile range across subjects.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr
from pymc.exceptions import ImplicitFreezeWarning

from analysis import style
from models.data import Cohort
from models.effects import CONTRAST_DIM
from models.fit import CHECKS_COMPILE

STATISTIC = "median over subjects of the % CD49d+"


def predictive_row_rates(idata: xr.DataTree, group: str, cohort: Cohort) -> np.ndarray:
    """Simulated positive rates, shape (sample, cohort row), from a predictive group."""
    predictive = idata[group].to_dataset()
    labels = [f"{r.subject_id}:{r.subset}" for r in cohort.rows.itertuples()]
    rates = np.full((predictive.sizes["chain"] * predictive.sizes["draw"], len(labels)), np.nan)
    position = {label: i for i, label in enumerate(labels)}
    if "n_cd49d_pos" in predictive:
        counts = predictive["n_cd49d_pos"].stack(sample=("chain", "draw")).transpose("sample", ...)
        rows = [position[str(label)] for label in counts["count_row"].values]
        n_cells = cohort.rows["n_cells"].to_numpy()[rows]
        rates[:, rows] = counts.values / n_cells
    if "logit_pct" in predictive:
        logits = predictive["logit_pct"].stack(sample=("chain", "draw")).transpose("sample", ...)
        rows = [position[str(label)] for label in logits["pct_row"].values]
        rates[:, rows] = 1 / (1 + np.exp(-logits.values))
    return rates


def cell_statistics(
    rates: np.ndarray,
    cohort: Cohort,
    *,
    statistic: Callable[[np.ndarray], np.ndarray] = lambda x: np.median(x, axis=1),
) -> pd.DataFrame:
    """A statistic over each group x subset's subjects (of the rates in %, so in % or
    percentage points): one column per cell, one row per sample. ``statistic`` reduces a
    (sample, subject) array along axis 1; the default is the median."""
    rows = cohort.rows
    columns = {}
    for (group, subset), cell in rows.groupby(["group", "subset"], observed=True):
        columns[(str(group), str(subset))] = statistic(100 * rates[:, cell.index])
    return pd.DataFrame(columns)


def predictive_check_figure(
    idata: xr.DataTree, cohort: Cohort, *, group: str, title: str, output: Path
) -> pd.DataFrame:
    """Draw the check for ``group`` (``prior_predictive`` or ``posterior_predictive``).

    Returns
    -------
    pandas.DataFrame
        Per group x subset: observed statistic and its predictive quantiles and tail
        probability (share of predictive draws at or below the observed value).
    """
    simulated = cell_statistics(predictive_row_rates(idata, group, cohort), cohort)
    observed = cell_statistics(cohort.rows["positive_rate"].to_numpy()[None, :], cohort).iloc[0]
    subsets = list(cohort.spec.subsets)
    fig, axes = plt.subplots(
        1,
        len(subsets),
        sharey=True,
        figsize=(style.FIGURE_WIDTH_IN, style.PANEL_HEIGHT_IN),
        dpi=style.DPI,
        squeeze=False,
    )
    for ax, subset in zip(axes[0], subsets, strict=True):
        draw_panel(ax, simulated, observed, cohort, subset)
    axes[0, 0].set_ylabel(f"% CD49d+ ({STATISTIC.split(' of')[0]})")
    fig.suptitle(
        f"{title}\nbars: predictive 50% and 90% intervals of the group median; "
        "open diamond: observed median; grey dots: subjects",
        fontsize=8,
    )
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return check_table(simulated, observed)


def draw_panel(
    ax, simulated: pd.DataFrame, observed: pd.Series, cohort: Cohort, subset: str
) -> None:
    groups = [g for g, s in simulated.columns if s == subset]
    for x, group in enumerate(groups):
        values = simulated[(group, subset)].dropna()
        colour = style.GROUP_COLOURS.get(group, "#555555")
        for prob, width in ((style.OUTER_PROB, 1.2), (style.INNER_PROB, 4.0)):
            low, high = np.quantile(values, [(1 - prob) / 2, 1 - (1 - prob) / 2])
            ax.vlines(x, low, high, colors=colour, linewidth=width)
        subjects = cohort.rows[(cohort.rows["group"] == group) & (cohort.rows["subset"] == subset)]
        jitter = np.linspace(-0.15, 0.15, len(subjects)) + 0.3
        ax.scatter(x + jitter, 100 * subjects["positive_rate"], s=5, color=style.SUBJECT_COLOUR)
        ax.scatter(
            x,
            observed[(group, subset)],
            marker="D",
            s=22,
            facecolors="none",
            edgecolors=style.OBSERVED_COLOUR,
            linewidths=0.9,
            zorder=3,
        )
    ax.set_xticks(range(len(groups)), groups, rotation=30, fontsize=7)
    ax.set_title(subset, fontsize=9)


def check_table(simulated: pd.DataFrame, observed: pd.Series) -> pd.DataFrame:
    rows = []
    for (group, subset), values in simulated.items():
        values = values.dropna()
        rows.append(
            {
                "group": group,
                "subset": subset,
                "observed": observed[(group, subset)],
                "predictive_q05": np.quantile(values, 0.05),
                "predictive_q50": np.quantile(values, 0.5),
                "predictive_q95": np.quantile(values, 0.95),
                "tail_prob_le_observed": float((values <= observed[(group, subset)]).mean()),
            }
        )
    return pd.DataFrame(rows)


# --- the new-subject check ---------------------------------------------------------------------

#: The model's outcome variables that carry the rates (``models.likelihood``): counts, and the
#: logit-normal of rows with only a percentage.
RATE_OUTCOMES = ("n_cd49d_pos", "logit_pct")


def subject_quantiles(values: np.ndarray, probs) -> np.ndarray:
    """Quantiles over axis 1 (subjects), skipping missing rates (numpy's NaN-aware version is
    about 100 times as slow, so it is used only where some are missing)."""
    quantile = np.nanquantile if np.isnan(values).any() else np.quantile
    return quantile(values, probs, axis=1)


#: Statistics over a group's subjects (of the % CD49d+), per group x subset: the median (%) and
#: the interquartile range (percentage points; linear interpolation, as ``frequentist.csv``).
SUBJECT_STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "median": lambda x: subject_quantiles(x, 0.5),
    "iqr": lambda x: np.subtract(*subject_quantiles(x, [0.75, 0.25])),
}
#: Quantiles of the replicated statistic written per cell (two central intervals, 50% and 90%).
REPLICATE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The columns of ``ppc_new_subjects.csv`` (README.md, 'Outputs of cd49d fit').
NEW_SUBJECT_COLUMNS = [
    "model",
    "group",
    "subset",
    "statistic",
    "n_subjects",
    "observed",
    *(f"replicated_q{round(100 * q):02d}" for q in REPLICATE_QUANTILES),
    "observed_quantile",
    "p_value",
    "replicates",
]
#: Spawn key of the new-subject check's seed under the command's root seed, apart from the
#: children ``models.fit`` spawns for its sampler attempts and checks (keys 0, 1, ...).
NEW_SUBJECT_STREAM = 101


def new_subject_seed(root_seed: int) -> int:
    """The new-subject check's seed: a child of ``SeedSequence(root_seed)`` of its own."""
    child = np.random.SeedSequence(root_seed, spawn_key=(NEW_SUBJECT_STREAM,))
    return int(child.generate_state(1)[0])


def subject_level_variables(model: pm.Model, cohort: Cohort) -> list[str]:
    """The model's free variables with one value per subject, patient, treated patient or
    visit contrast: what a new subject redraws from the population (found in the graph).

    E.g. ``subject_logit`` (``positive_rate``); ``subject_probit`` and ``saturation_z``
    (``saturation``; ``saturation_unit`` under the uniform occupancy prior); with repeated
    samples of a patient, the patient vectors and visit contrasts (``models.effects``).
    """
    patient_dim, _, _ = cohort.patient_index()
    per_subject = {"subject", patient_dim, "treated_subject", CONTRAST_DIM}
    dims = model.named_vars_to_dims
    return [rv.name for rv in model.free_RVs if per_subject.intersection(dims.get(rv.name) or ())]


def replicate_outcomes(
    model: pm.Model, idata: xr.DataTree, *, resample: Sequence[str], seed: int
) -> xr.DataTree:
    """Replicated outcomes at each posterior draw, on the model's own graph.

    Parameters
    ----------
    model
        The fitted model, rebuilt for the same cohort.
    idata
        A fit with a ``posterior`` group.
    resample
        Variables redrawn from their distribution given each draw's other values (PyMC's
        ``sample_vars``: in PyMC 6, ``var_names`` alone only copies trace values); empty: the
        draws' own values are replayed and only the outcomes are new.
    seed
        Seed of the draws.

    Returns
    -------
    xarray.DataTree
        Its ``posterior_predictive`` group holds the outcomes of ``RATE_OUTCOMES`` in the model
        and the ``resample`` variables.

    Raises
    ------
    pymc.exceptions.ImplicitFreezeWarning
        If a variable downstream of ``resample`` would keep its posterior value (then the
        replicates would mix new and fitted subjects).
    """
    outcomes = [rv.name for rv in model.observed_RVs if rv.name in RATE_OUTCOMES]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImplicitFreezeWarning)
        with model:
            return pm.sample_posterior_predictive(
                idata,
                var_names=[*outcomes, *resample],
                sample_vars=list(resample) or None,
                progressbar=False,
                random_seed=seed,
                compile_kwargs=CHECKS_COMPILE,
            )


def subject_statistics(rates: np.ndarray, cohort: Cohort) -> dict[str, pd.DataFrame]:
    """``SUBJECT_STATISTICS`` of (sample, row) rates: per statistic, one column per cell."""
    return {
        name: cell_statistics(rates, cohort, statistic=function)
        for name, function in SUBJECT_STATISTICS.items()
    }


def new_subject_check(
    model: pm.Model, idata: xr.DataTree, cohort: Cohort, *, seed: int, model_name: str
) -> pd.DataFrame:
    """The posterior predictive check for new subjects drawn from the population.

    At each posterior draw every ``subject_level_variables`` variable is redrawn from its
    population distribution given the draw's hyperparameters, then the outcomes at each real
    row's ``n_cells``; per group x subset, the median and IQR of the % CD49d+ across subjects
    are compared with the cohort's.

    Parameters
    ----------
    model
        The fitted model rebuilt for ``cohort`` (its outcomes are not used).
    idata
        The fit (its ``posterior`` group).
    cohort
        The cohort: its design (rows, ``n_cells``) and its observed rates.
    seed
        Seed of the replicates (``new_subject_seed``).
    model_name
        Written in the table's ``model`` column.

    Returns
    -------
    pandas.DataFrame
        One row per group x subset x statistic, columns ``NEW_SUBJECT_COLUMNS``.
    """
    resample = subject_level_variables(model, cohort)
    replicated = replicate_outcomes(model, idata, resample=resample, seed=seed)
    rates = predictive_row_rates(replicated, "posterior_predictive", cohort)
    observed = subject_statistics(cohort.rows["positive_rate"].to_numpy()[None, :], cohort)
    tables = [
        statistic_table(values, observed[name].iloc[0], statistic=name)
        for name, values in subject_statistics(rates, cohort).items()
    ]
    subjects = (
        cohort.rows.groupby(["group", "subset"], observed=True)
        .size()
        .rename("n_subjects")
        .reset_index()
        .astype({"group": str, "subset": str})
    )
    table = pd.concat(tables, ignore_index=True).merge(subjects, on=["group", "subset"])
    return table.assign(model=model_name)[NEW_SUBJECT_COLUMNS]


def observed_quantile(replicates: np.ndarray, observed: float) -> float:
    """The observed value's (mid-)quantile among the replicates: the share below it plus half
    the share equal to it. Near 0 or 1: the model rarely reproduces the observed value."""
    below = np.mean(replicates < observed)
    return float(below + 0.5 * np.mean(replicates == observed))


def statistic_table(replicated: pd.DataFrame, observed: pd.Series, *, statistic: str):
    """Per cell: the observed statistic, the replicates' quantiles, the observed value's
    quantile among them and the two-sided posterior predictive p-value."""
    rows = []
    for (group, subset), values in replicated.items():
        values = values.dropna().to_numpy()
        value = float(observed[(group, subset)])
        quantile = observed_quantile(values, value)
        rows.append(
            {
                "group": group,
                "subset": subset,
                "statistic": statistic,
                "observed": value,
                **{
                    f"replicated_q{round(100 * q):02d}": float(np.quantile(values, q))
                    for q in REPLICATE_QUANTILES
                },
                "observed_quantile": quantile,
                "p_value": min(1.0, 2 * min(quantile, 1 - quantile)),
                "replicates": values.size,
            }
        )
    return pd.DataFrame(rows)
