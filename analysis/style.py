"""Colours, sizes and interval settings shared by every figure."""

GROUP_COLOURS = {"HC": "#4C72B0", "MS_naive": "#DD8452", "MS_NTZ": "#C44E52", "NMOSD": "#8172B3"}
OBSERVED_COLOUR = "#222222"
SUBJECT_COLOUR = "#999999"
FIGURE_WIDTH_IN = 7.0
PANEL_HEIGHT_IN = 2.8
DPI = 150
#: Predictive intervals drawn: inner and outer central probability.
INNER_PROB, OUTER_PROB = 0.5, 0.9


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
