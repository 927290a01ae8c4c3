"""Colours, sizes and interval settings shared by every figure.

One colour-blind-safe palette (Okabe & Ito 2008), with a fixed colour per subset, per group and
per kind of analysis, so that a colour means the same in every figure. Journal sizes: single
column 85 mm, double column 175 mm; vector PDF plus a 300-dpi PNG (``save_figure``).
"""

from __future__ import annotations

from pathlib import Path

#: Okabe-Ito, by name.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
SUBSET_COLOURS = {
    "Th1": OKABE_ITO["blue"],
    "Th17": OKABE_ITO["vermillion"],
    "Treg": OKABE_ITO["bluish_green"],
}
GROUP_COLOURS = {
    "HC": OKABE_ITO["sky_blue"],
    "MS_naive": OKABE_ITO["orange"],
    "MS_NTZ": OKABE_ITO["reddish_purple"],
    "NMOSD": OKABE_ITO["black"],
}
#: Per kind of analysis: the study's test, the mixed model, the Bayesian rules.
ANALYSIS_COLOURS = {
    "mann_whitney": OKABE_ITO["blue"],
    "wilcoxon": OKABE_ITO["blue"],
    "logistic_lr": OKABE_ITO["blue"],
    "logistic_wald": OKABE_ITO["sky_blue"],
    "mixed_model": OKABE_ITO["bluish_green"],
    "mann_whitney_mfi": OKABE_ITO["reddish_purple"],
    "wilcoxon_mfi": OKABE_ITO["reddish_purple"],
    "bayes_direction": OKABE_ITO["vermillion"],
    "bayes_rope": OKABE_ITO["reddish_purple"],
    "bayes_precision": OKABE_ITO["orange"],
}
MM_PER_INCH = 25.4
SINGLE_COLUMN_IN = 85 / MM_PER_INCH
DOUBLE_COLUMN_IN = 175 / MM_PER_INCH
PRINT_DPI = 300
OBSERVED_COLOUR = "#222222"
SUBJECT_COLOUR = "#999999"
FIGURE_WIDTH_IN = 7.0
PANEL_HEIGHT_IN = 2.8
DPI = 150
#: Predictive intervals drawn: inner and outer central probability.
INNER_PROB, OUTER_PROB = 0.5, 0.9


def save_figure(fig, stem: Path) -> list[Path]:
    """Write ``stem.pdf`` (vector) and ``stem.png`` (300 dpi); returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for path in paths:
        fig.savefig(path, dpi=PRINT_DPI)
    return paths


def panel_grid(count: int, n_cols: int):
    """A figure of ``count`` panels in rows of at most ``n_cols``, unused panels hidden.

    Returns
    -------
    tuple
        ``(figure, axes)``, ``axes`` a 2-D array (rows x columns).
    """
    import math

    import matplotlib.pyplot as plt

    cols = min(n_cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(FIGURE_WIDTH_IN, PANEL_HEIGHT_IN * rows + 1.0),
        dpi=DPI,
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes
