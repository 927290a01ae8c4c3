"""Names the command line offers, kept free of heavy imports so that `cd49d --help` is fast.

``models.registry`` and ``models.fit`` check that they define exactly these.
"""

MODEL_NAMES: tuple[str, ...] = (
    "positive_rate",
    "saturation",
    "saturation_per_subset",
    "exacerbation",
    "exacerbation_logit",
)
PRIOR_SETS: tuple[str, ...] = (
    "default",
    "uniform_saturation",
    "per_subset_sigma",
    "treated_offset",
)
SAMPLERS: tuple[str, ...] = ("nutpie", "pymc", "numpyro")
