"""Prior and posterior predictive checks: group x subset positive rates against the data.

The checked statistic is the median over a group's subjects of the subject positive rate, per
subset; the figure shows its predictive 50% and 90% intervals, the observed value, and the
observed subjects.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from analysis import style
from models.data import Cohort

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


def cell_statistics(rates: np.ndarray, cohort: Cohort) -> pd.DataFrame:
    """The checked statistic per group x subset: one column per cell, one row per sample."""
    rows = cohort.rows
    columns = {}
    for (group, subset), cell in rows.groupby(["group", "subset"], observed=True):
        columns[(str(group), str(subset))] = 100 * np.median(rates[:, cell.index], axis=1)
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
