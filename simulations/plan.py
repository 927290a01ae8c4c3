"""A power-study plan: one TOML file, checked in full before any work starts.

The plan's sections (documented field by field in ``simulations/plans/*.toml``):

- ``[trial]``: the design (``cross_sectional``, ``paired`` or ``prognostic``), the grid of
  ``n`` (natalizumab-treated patients per trial, in every design), the allocation ratio
  (natalizumab-naive patients per treated patient, cross-sectional only), follow-up and the
  yearly exacerbation probability (prognostic only) and the endpoints;
- ``[effect]``: the design prior for conventional power: the generating parameters come from a
  cohort configuration (default the bundled one) with the effect-size parameters overridden here;
  ``--design-prior FIT.nc`` replaces them by posterior draws (assurance);
- ``[replicates]``: replicates per cell, the type-I-error (null) run, an optional MCSE target
  for adaptive replication, and replicates per task;
- ``[analysis]``: the frequentist level, which analyses run, and the Bayesian refit (its own
  analysis priors, model, decision rules and sampler settings).

Validation is pydantic's: unknown keys (typos), wrong types and impossible values are reported
one line each as ``FILE: section.key: what is wrong``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Design = Literal["cross_sectional", "paired", "prognostic"]
Endpoint = Literal[
    "ratio_fold_change_Th17_Treg",
    "ratio_fold_change_Th1_Treg",
    "differential_reduction_Treg_Th17",
    "differential_reduction_Treg_Th1",
    "exacerbation_log_or",
]
ENDPOINTS_BY_DESIGN: dict[str, tuple[str, ...]] = {
    "cross_sectional": (
        "ratio_fold_change_Th17_Treg",
        "ratio_fold_change_Th1_Treg",
        "differential_reduction_Treg_Th17",
        "differential_reduction_Treg_Th1",
    ),
    "paired": (
        "ratio_fold_change_Th17_Treg",
        "ratio_fold_change_Th1_Treg",
        "differential_reduction_Treg_Th17",
        "differential_reduction_Treg_Th1",
    ),
    "prognostic": ("exacerbation_log_or",),
}
#: Bayesian analysis model per design when the plan names none.
DEFAULT_BAYES_MODEL = {
    "cross_sectional": "positive_rate",
    "paired": "positive_rate",
    "prognostic": "exacerbation_logit",
}
#: Yearly exacerbation probability under natalizumab: 1 - exp(-0.53), the annualised relapse
#: rate 0.53 of Japanese patients on natalizumab (literature.md A14, Saida 2017), Poisson.
DEFAULT_EXACERBATION_PROBABILITY_PER_YEAR = round(1 - math.exp(-0.53), 3)

Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trial(Section):
    design: Design
    n: list[Annotated[int, Field(ge=4)]] = Field(min_length=1)
    allocation: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0
    follow_up_months: Annotated[float, Field(gt=0.0, le=120.0)] = 12.0
    exacerbation_probability_per_year: Probability = DEFAULT_EXACERBATION_PROBABILITY_PER_YEAR
    endpoints: list[Endpoint] = Field(min_length=1)

    @model_validator(mode="after")
    def endpoints_fit_design(self) -> Trial:
        allowed = ENDPOINTS_BY_DESIGN[self.design]
        wrong = [e for e in self.endpoints if e not in allowed]
        if wrong:
            raise ValueError(
                f"endpoint {wrong[0]!r} does not apply to the {self.design} design "
                f"(allowed: {', '.join(allowed)})"
            )
        if len(set(self.n)) != len(self.n) or self.n != sorted(self.n):
            raise ValueError(f"n must be strictly increasing without repeats, got {self.n}")
        return self

    @property
    def event_probability(self) -> float:
        """Probability of an exacerbation during follow-up at the average CD49d ratio."""
        years = self.follow_up_months / 12.0
        return 1.0 - (1.0 - self.exacerbation_probability_per_year) ** years


class Effect(Section):
    cohort_config: str | None = None
    source: str = ""
    kappa: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    saturation_mean: Annotated[float, Field(ge=0.6, le=1.0)] | None = None
    exacerbation_log_or: Annotated[float, Field(ge=-5.0, le=5.0)] | None = None


class Replicates(Section):
    initial: PositiveInt = 200
    null: Annotated[int, Field(ge=0)] = 200  # 0: no type-I-error run
    mcse_target: Annotated[float, Field(gt=0.0, le=0.25)] | None = None
    max: PositiveInt = 2000
    per_task: PositiveInt = 25

    @model_validator(mode="after")
    def max_covers_initial(self) -> Replicates:
        if self.max < max(self.initial, self.null):
            raise ValueError(f"max ({self.max}) is below initial or null replicates")
        return self


class Bayesian(Section):
    enabled: bool = True
    model: (
        Literal[
            "positive_rate",
            "saturation",
            "saturation_per_subset",
            "exacerbation",
            "exacerbation_logit",
        ]
        | None
    ) = None
    priors: Literal["default", "uniform_saturation"] = "default"
    backend: Literal["batch", "nutpie"] = "batch"
    replicates: Annotated[int, Field(ge=0)] | None = None
    rules: list[Literal["direction", "rope", "precision"]] = Field(
        default=["direction"], min_length=1
    )
    direction_threshold: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.975
    rope_half_width: Annotated[float, Field(gt=0.0)] = 0.1
    rope_probability: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    precision_width: Annotated[float, Field(gt=0.0)] = 0.5
    chains: Annotated[int, Field(ge=2, le=16)] = 4
    draws: Annotated[int, Field(ge=100)] = 1000
    tune: Annotated[int, Field(ge=50)] | None = None
    target_accept: Annotated[float, Field(gt=0.5, lt=1.0)] | None = None


class Analysis(Section):
    alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    frequentist: bool = True
    mixed_model: bool = True
    bayesian: Bayesian = Bayesian()


class Plan(Section):
    name: str = Field(min_length=1)
    description: str = ""
    root_seed: Annotated[int, Field(ge=0, lt=2**63)]
    trial: Trial
    effect: Effect = Effect()
    replicates: Replicates = Replicates()
    analysis: Analysis = Analysis()

    @model_validator(mode="after")
    def bayes_model_fits_design(self) -> Plan:
        model = self.analysis.bayesian.model
        joint = ("exacerbation", "exacerbation_logit")
        if self.trial.design == "prognostic" and model not in (None, *joint):
            raise ValueError(
                "the prognostic design needs analysis.bayesian.model = 'exacerbation_logit' "
                "or 'exacerbation'"
            )
        if self.trial.design != "prognostic" and model in joint:
            raise ValueError(f"the {self.trial.design} design has no exacerbation endpoint")
        if self.bayes_model in ("positive_rate", "exacerbation_logit") and (
            self.analysis.bayesian.priors != "default"
        ):
            raise ValueError(f"the {self.bayes_model} model has only the 'default' prior set")
        return self

    @property
    def bayes_model(self) -> str:
        return self.analysis.bayesian.model or DEFAULT_BAYES_MODEL[self.trial.design]

    def result_hash(self, design_prior_digest: str = "") -> str:
        """SHA-256 of everything that decides a replicate's result (not how many are run).

        Replicate counts, the MCSE target and the task size are left out, so that a plan can be
        extended and its stored replicates reused; a design-prior fit enters by its digest.
        """
        content = self.model_dump(mode="json", exclude={"replicates", "description", "name"})
        content["design_prior"] = design_prior_digest
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class PlanError(ValueError):
    """A plan file cannot be read or breaks a rule; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_plan(path: Path | str) -> Plan:
    """Read and validate a plan file.

    Raises
    ------
    PlanError
        One line per problem, each ``FILE: key: what is wrong``.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise PlanError([f"{path}: cannot read plan: {err}"]) from err
    except tomllib.TOMLDecodeError as err:
        raise PlanError([f"{path}: not valid TOML: {err}"]) from err
    try:
        return Plan.model_validate(raw)
    except ValidationError as err:
        raise PlanError([f"{path}: {describe(error)}" for error in err.errors()]) from err


def describe(error: dict) -> str:
    """One pydantic error as ``section.key: message``, with a suggestion for unknown keys."""
    location = ".".join(str(part) for part in error["loc"]) or "plan"
    if error["type"] == "extra_forbidden":
        *parents, key = [str(part) for part in error["loc"]]
        known = known_keys(parents)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        return f"{location}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{location}: {message}"


def known_keys(parents: list[str]) -> list[str]:
    section: type[BaseModel] = Plan
    for name in parents:
        annotation = section.model_fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        section = annotation
    return list(section.model_fields)
