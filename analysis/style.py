"""Colours, sizes and interval settings shared by every figure."""

GROUP_COLOURS = {"HC": "#4C72B0", "MS_naive": "#DD8452", "MS_NTZ": "#C44E52", "NMOSD": "#8172B3"}
OBSERVED_COLOUR = "#222222"
SUBJECT_COLOUR = "#999999"
FIGURE_WIDTH_IN = 7.0
PANEL_HEIGHT_IN = 2.8
DPI = 150
#: Predictive intervals drawn: inner and outer central probability.
INNER_PROB, OUTER_PROB = 0.5, 0.9
