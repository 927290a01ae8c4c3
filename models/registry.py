"""The fittable models by name, each a builder from ``(cohort, prior_set, observed)`` to a model.

``overrides`` replaces single prior values (a dict of the prior dataclass's fields).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pymc as pm

from models import exacerbation, positive_rate, saturation
from models.data import Cohort
from models.names import PRIOR_SETS
from models.priors import TREATED_OFFSET_SD, SaturationPriors


@dataclass(frozen=True)
class ModelSpec:
    """A named model: what it is and how to build it."""

    name: str
    description: str
    build: Callable[..., pm.Model]
    uses_saturation: bool
    needs_follow_up: bool = False  # every treated patient's exacerbation (0 or 1)

    def check(self, cohort: Cohort) -> None:
        """Raise ValueError, in one sentence, when the cohort cannot be fitted by this model."""
        if self.needs_follow_up and (problem := exacerbation.follow_up_problem(cohort, self.name)):
            raise ValueError(problem)


def saturation_priors(prior_set: str, overrides: dict | None = None) -> SaturationPriors:
    """A named prior set, with individual values replaced (``overrides``: e.g. the deliberately
    wrong priors of an SBC check)."""
    if prior_set not in PRIOR_SETS:
        raise ValueError(f"unknown prior set {prior_set!r}: choose from {', '.join(PRIOR_SETS)}")
    priors = SaturationPriors(
        uniform_saturation=prior_set == "uniform_saturation",
        sigma_per_subset=prior_set == "per_subset_sigma",
        treated_offset_sd=TREATED_OFFSET_SD if prior_set == "treated_offset" else 0.0,
    )
    return replace(priors, **(overrides or {}))


def only_default(name: str, prior_set: str) -> None:
    if prior_set != "default":
        raise ValueError(f"the {name} model has only the 'default' prior set")


def _positive_rate(
    cohort: Cohort, prior_set: str = "default", *, observed: bool = True, overrides=None
):
    only_default("positive_rate", prior_set)
    priors = replace(positive_rate.PositiveRatePriors(), **(overrides or {}))
    return positive_rate.build_model(cohort, priors, observed=observed)


def _saturation(kappa: saturation.KappaVariant):
    def build(cohort: Cohort, prior_set: str = "default", *, observed: bool = True, overrides=None):
        return saturation.build_model(
            cohort, saturation_priors(prior_set, overrides), kappa=kappa, observed=observed
        )

    return build


def _exacerbation(
    cohort: Cohort, prior_set: str = "default", *, observed: bool = True, overrides=None
):
    priors = saturation_priors(prior_set, overrides)
    return exacerbation.build_model(cohort, priors, observed=observed)


def _exacerbation_logit(
    cohort: Cohort, prior_set: str = "default", *, observed: bool = True, overrides=None
):
    only_default("exacerbation_logit", prior_set)
    if overrides:
        raise ValueError("the exacerbation_logit model takes no prior overrides")
    return exacerbation.build_model(cohort, rates="positive_rate", observed=observed)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "positive_rate",
            "descriptive binomial-logit model, group x subset cells",
            _positive_rate,
            uses_saturation=False,
        ),
        ModelSpec(
            "saturation",
            "latent-expression model, one kappa shared by all subsets",
            _saturation("shared"),
            uses_saturation=True,
        ),
        ModelSpec(
            "saturation_per_subset",
            "latent-expression model, one kappa per subset",
            _saturation("per_subset"),
            uses_saturation=True,
        ),
        ModelSpec(
            "exacerbation",
            "latent-expression model (shared kappa) joint with logistic "
            "exacerbation on the latent log CD49d ratio",
            _exacerbation,
            uses_saturation=True,
            needs_follow_up=True,
        ),
        ModelSpec(
            "exacerbation_logit",
            "descriptive logit rates (positive_rate) joint with logistic exacerbation on the "
            "latent log CD49d ratio; for cohorts of treated patients only",
            _exacerbation_logit,
            uses_saturation=False,
            needs_follow_up=True,
        ),
    )
}
