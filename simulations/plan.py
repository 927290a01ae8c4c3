"""A power-study plan: one TOML file, checked in full before any work starts.

The plan's sections (documented field by field in ``simulations/plans/*.toml``):

- ``question`` (top level): which of the study's questions the plan answers (``biomarker``:
  do the CD49d ratios rise under natalizumab; ``mechanism``: does natalizumab remove more
  detectable CD49d from Treg than the gate position explains; ``prognosis``: does the ratio
  predict exacerbation), which decides the endpoints, null scenario and default Bayesian model
  (``QUESTIONS``); left out, it follows from the design (``prognostic``: prognosis, else
  biomarker);
- ``[trial]``: the design (``cross_sectional``, ``paired`` or ``prognostic``), the grid of
  ``n`` (natalizumab-treated patients per trial, in every design), the allocation ratio
  (natalizumab-naive patients per treated patient, cross-sectional only), follow-up and the
  yearly exacerbation probability (prognostic only), the endpoints and what each sample
  measures (``measurements``: ``["rates"]``, or ``["rates", "mfi"]`` for the mechanism
  question: a median fluorescence reading per sample and subset beside the positive rate);
- ``[effect]``: the design prior for conventional power: the generating parameters come from a
  cohort configuration (default the bundled one) with the effect-size parameters overridden here
  (``kappa``; for the mechanism question also ``kappa_by_subset``, the alternative, while
  ``kappa`` is the shared value of its null, and ``sigma_by_subset``, a spread of log CD49d
  per subset, which only a plan that measures MFI can take: from rates alone
  ``kappa_difference`` is then not identified at any n);
  ``--design-prior FIT.nc`` replaces them by posterior draws (assurance);
- ``[replicates]``: replicates per cell, the type-I-error (null) run, an optional MCSE target
  for adaptive replication, and replicates per task;
- ``[analysis]``: the one-sided level of every frequentist test (``one_sided_alpha``), which
  analyses run, and the Bayesian refit (its own analysis priors, model, decision rules and
  sampler settings).

Validation is pydantic's: unknown keys (typos), wrong types and impossible values are reported
one line each as ``FILE: section.key: what is wrong``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

Design = Literal["cross_sectional", "paired", "prognostic"]
Measurement = Literal["rates", "mfi"]
Question = Literal["biomarker", "mechanism", "prognosis"]
Endpoint = Literal[
    "ratio_fold_change_Th17_Treg",
    "ratio_fold_change_Th1_Treg",
    "differential_reduction_Treg_Th17",
    "differential_reduction_Treg_Th1",
    "kappa_difference_Treg_Th17",
    "kappa_difference_Treg_Th1",
    "exacerbation_log_or",
]


@dataclass(frozen=True)
class QuestionSpec:
    """What a question allows: designs, endpoints, and the Bayesian models that estimate them."""

    designs: tuple[str, ...]
    endpoints: tuple[str, ...]
    models: tuple[str, ...]


QUESTIONS: dict[str, QuestionSpec] = {
    "biomarker": QuestionSpec(
        designs=("cross_sectional", "paired"),
        endpoints=(
            "ratio_fold_change_Th17_Treg",
            "ratio_fold_change_Th1_Treg",
            "differential_reduction_Treg_Th17",
            "differential_reduction_Treg_Th1",
        ),
        models=("positive_rate", "saturation", "saturation_per_subset"),
    ),
    # kappa_Treg - kappa_other: only the per-subset-kappa model has it.
    "mechanism": QuestionSpec(
        designs=("cross_sectional", "paired"),
        endpoints=("kappa_difference_Treg_Th17", "kappa_difference_Treg_Th1"),
        models=("saturation_per_subset",),
    ),
    "prognosis": QuestionSpec(
        designs=("prognostic",),
        endpoints=("exacerbation_log_or",),
        models=("exacerbation_logit", "exacerbation"),
    ),
}
#: The question a plan answers when it names none.
DEFAULT_QUESTION = {
    "cross_sectional": "biomarker",
    "paired": "biomarker",
    "prognostic": "prognosis",
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
    measurements: list[Measurement] = Field(default_factory=lambda: ["rates"])

    @model_validator(mode="after")
    def n_increasing(self) -> Trial:
        if len(set(self.n)) != len(self.n) or self.n != sorted(self.n):
            raise ValueError(f"n must be strictly increasing without repeats, got {self.n}")
        return self

    @model_validator(mode="after")
    def rates_measured(self) -> Trial:
        if "rates" not in self.measurements or len(set(self.measurements)) != len(
            self.measurements
        ):
            raise ValueError(
                f"measurements must hold 'rates' (and may add 'mfi'), once each, got "
                f"{self.measurements}"
            )
        return self

    @property
    def measures_mfi(self) -> bool:
        return "mfi" in self.measurements

    @property
    def event_probability(self) -> float:
        """Probability of an exacerbation during follow-up at the average CD49d ratio."""
        years = self.follow_up_months / 12.0
        return 1.0 - (1.0 - self.exacerbation_probability_per_year) ** years


class Effect(Section):
    """The generating parameters a plan sets, in natural units, over the cohort
    configuration's: kappa, occupancy mean and SD, the between-subject and subject x subset SDs
    of log CD49d location, the sample x subset (visit) SD of a patient's repeated samples
    (paired design), a factor on the configuration's median events per gate, and the
    exacerbation log odds ratio per SD of the latent log ratio."""

    cohort_config: str | None = None
    source: str = ""
    kappa: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    kappa_by_subset: dict[str, Annotated[float, Field(gt=0.0, lt=1.0)]] | None = None
    sigma_by_subset: dict[str, Annotated[float, Field(gt=0.0, le=5.0)]] | None = None
    saturation_mean: Annotated[float, Field(ge=0.6, le=1.0)] | None = None
    saturation_sd: Annotated[float, Field(gt=0.0, le=0.2)] | None = None
    tau_subject: Annotated[float, Field(ge=0.0, le=3.0)] | None = None
    tau_subject_subset: Annotated[float, Field(ge=0.0, le=3.0)] | None = None
    visit_sd: Annotated[float, Field(ge=0.0, le=3.0)] | None = None
    events_per_gate_scale: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
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


#: Endpoint families, each on its own scale (``simulations.bayes.endpoint_draws``).
ENDPOINT_FAMILIES = (
    "ratio_fold_change",
    "differential_reduction",
    "kappa_difference",
    "exacerbation_log_or",
)
#: Default ROPE half-widths, per endpoint family on its scale (assumptions, to be set per study):
#: log ratio fold change 0.1 (a ratio within about +-10%); difference of reductions 0.05 (five
#: percentage points); kappa difference 0.05 (5% of the receptor signal per unit occupancy);
#: log odds ratio per SD 0.2 (an odds ratio within about 0.82 to 1.22).
DEFAULT_ROPE = {
    "ratio_fold_change": 0.1,
    "differential_reduction": 0.05,
    "kappa_difference": 0.05,
    "exacerbation_log_or": 0.2,
}
#: Default widths of the 95% interval for the precision rule, same scales (assumptions):
#: half of the alternative's effect or a little more, so that the rule asks for an interval
#: that would tell the alternative from no effect.
DEFAULT_PRECISION = {
    "ratio_fold_change": 0.5,
    "differential_reduction": 0.2,
    "kappa_difference": 0.3,
    "exacerbation_log_or": 1.0,
}
EndpointFamily = Literal[
    "ratio_fold_change", "differential_reduction", "kappa_difference", "exacerbation_log_or"
]
PositiveFloat = Annotated[float, Field(gt=0.0)]


def endpoint_family(endpoint: str) -> str:
    """The family (``ENDPOINT_FAMILIES``) an endpoint belongs to."""
    for family in ENDPOINT_FAMILIES:
        if endpoint.startswith(family):
            return family
    raise ValueError(f"endpoint {endpoint!r} belongs to no family of {ENDPOINT_FAMILIES}")


class Bayesian(Section):
    """Bayesian analysis and decision rules. ``rope_half_width`` and ``precision_width`` are
    tables keyed by endpoint family (``ENDPOINT_FAMILIES``), each on that endpoint's scale;
    families left out keep ``DEFAULT_ROPE`` / ``DEFAULT_PRECISION``."""

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
    rope_half_width: dict[EndpointFamily, PositiveFloat] = Field(
        default_factory=lambda: dict(DEFAULT_ROPE)
    )
    rope_probability: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    precision_width: dict[EndpointFamily, PositiveFloat] = Field(
        default_factory=lambda: dict(DEFAULT_PRECISION)
    )
    chains: Annotated[int, Field(ge=2, le=16)] = 4
    draws: Annotated[int, Field(ge=100)] = 1000
    tune: Annotated[int, Field(ge=50)] | None = None
    target_accept: Annotated[float, Field(gt=0.5, lt=1.0)] | None = None

    @field_validator("rope_half_width", "precision_width", mode="before")
    @classmethod
    def per_endpoint_family(cls, raw, info):
        """A table keyed by endpoint family, completed with the defaults; one number for every
        endpoint is refused (the endpoints' scales differ)."""
        defaults = DEFAULT_ROPE if info.field_name == "rope_half_width" else DEFAULT_PRECISION
        if not isinstance(raw, dict):
            raise ValueError(
                f"give {info.field_name} per endpoint family, on that endpoint's scale, e.g. "
                f"{info.field_name} = {{ ratio_fold_change = {defaults['ratio_fold_change']} }} "
                f"(families: {', '.join(ENDPOINT_FAMILIES)})"
            )
        return {**defaults, **raw}

    def rope_for(self, endpoint: str) -> float:
        return self.rope_half_width[endpoint_family(endpoint)]

    def precision_for(self, endpoint: str) -> float:
        return self.precision_width[endpoint_family(endpoint)]


class Analysis(Section):
    """``one_sided_alpha``: the level of every frequentist test, each one-sided in the
    hypothesised direction (0.025: a two-sided 0.05 test that must also have that sign, and the
    Bayesian direction rule's ``1 - 0.975``)."""

    one_sided_alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.025
    frequentist: bool = True
    mixed_model: bool = True
    bayesian: Bayesian = Bayesian()

    @model_validator(mode="before")
    @classmethod
    def no_two_sided_alpha(cls, raw):
        if isinstance(raw, dict) and "alpha" in raw:
            raise ValueError(
                "'alpha' is now 'one_sided_alpha': every test is one-sided in the hypothesised "
                "direction (a two-sided 0.05 that must have that sign is one_sided_alpha = 0.025)"
            )
        return raw


class Plan(Section):
    name: str = Field(min_length=1)
    description: str = ""
    question: Question
    root_seed: Annotated[int, Field(ge=0, lt=2**63)]
    trial: Trial
    effect: Effect = Effect()
    replicates: Replicates = Replicates()
    analysis: Analysis = Analysis()
    #: Assumptions to vary (``simulations.sensitivity``): ``{effect name: [values]}``.
    sensitivity: dict[str, list[float]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def question_from_design(cls, raw):
        """A plan without ``question`` answers its design's usual one."""
        trial = raw.get("trial") if isinstance(raw, dict) else None
        if isinstance(trial, dict) and "question" not in raw:
            design = trial.get("design")
            if design in DEFAULT_QUESTION:
                return {**raw, "question": DEFAULT_QUESTION[design]}
        return raw

    @model_validator(mode="after")
    def question_fits_plan(self) -> Plan:
        spec = QUESTIONS[self.question]
        if self.trial.design not in spec.designs:
            raise ValueError(
                f"the {self.question} question needs the {' or '.join(spec.designs)} design, "
                f"not {self.trial.design}"
            )
        wrong = [e for e in self.trial.endpoints if e not in spec.endpoints]
        if wrong:
            raise ValueError(
                f"endpoint {wrong[0]!r} does not answer the {self.question} question "
                f"(allowed: {', '.join(spec.endpoints)})"
            )
        model = self.analysis.bayesian.model
        if model is not None and model not in spec.models:
            raise ValueError(
                f"analysis.bayesian.model {model!r} cannot answer the {self.question} question "
                f"(allowed: {', '.join(spec.models)})"
            )
        if self.question == "mechanism":
            check_mechanism_effect(self.effect, self.trial.endpoints)
            check_identified(self.effect, self.trial)
        else:
            for name in ("kappa_by_subset", "sigma_by_subset"):
                if getattr(self.effect, name) is not None:
                    raise ValueError(f"effect.{name} belongs to the mechanism question")
            if self.trial.measures_mfi:
                raise ValueError(
                    "trial.measurements 'mfi' serves the mechanism question (the MFI tells "
                    "the subsets' spreads apart); the other questions' endpoints are rates"
                )
        check_attainable_level(self)
        if self.bayes_model in ("positive_rate", "exacerbation_logit") and (
            self.analysis.bayesian.priors != "default"
        ):
            raise ValueError(f"the {self.bayes_model} model has only the 'default' prior set")
        return self

    @property
    def bayes_model(self) -> str:
        return self.analysis.bayesian.model or QUESTIONS[self.question].models[0]

    def result_hash(self, design_prior_digest: str = "") -> str:
        """SHA-256 of everything that decides a replicate's result (not how many are run).

        Replicate counts, the MCSE target, the task size and the grid of n are left out (a
        replicate's seeds name its n themselves, ``simulations.seeds``), so that a plan can be
        extended by replicates or by n and its stored cells reused; a design-prior fit enters
        by its digest.
        """
        content = self.model_dump(
            mode="json", exclude={"replicates", "description", "name", "sensitivity"}
        )
        del content["trial"]["n"]
        # Fields added later enter only when set, so that older plans keep their hash.
        if content["trial"]["measurements"] == ["rates"]:
            del content["trial"]["measurements"]
        if content["effect"]["sigma_by_subset"] is None:
            del content["effect"]["sigma_by_subset"]
        content["design_prior"] = design_prior_digest
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def smallest_exact_p(design: str, n: int, allocation: float) -> float:
    """The smallest one-sided p of the design's exact rank test: Wilcoxon signed-rank
    ``1 / 2^n`` (paired), Mann-Whitney ``1 / C(n + m, n)`` (cross-sectional)."""
    if design == "paired":
        return 0.5**n
    return 1.0 / math.comb(n + round(n * allocation), n)


def check_attainable_level(plan: Plan) -> None:
    """Every n of a rate design must let the exact rank test reach the level."""
    if plan.trial.design == "prognostic" or not plan.analysis.frequentist:
        return
    design, allocation = plan.trial.design, plan.trial.allocation
    alpha = plan.analysis.one_sided_alpha
    low = [n for n in plan.trial.n if smallest_exact_p(design, n, allocation) > alpha]
    if low:
        test = "Wilcoxon signed-rank" if design == "paired" else "Mann-Whitney"
        smallest = smallest_exact_p(design, low[0], allocation)
        raise ValueError(
            f"at n = {', '.join(map(str, low))} the exact {test} test cannot reach p < "
            f"{alpha:g} (smallest one-sided p at n = {low[0]}: {smallest:.3g}): start trial.n "
            "higher"
        )


def check_mechanism_effect(effect: Effect, endpoints: list[str]) -> None:
    """The mechanism question's null is a shared kappa > 0 (``effect.kappa``) and its
    alternative a kappa per subset (``effect.kappa_by_subset``) naming every subset compared."""
    if not effect.kappa:
        raise ValueError(
            "the mechanism question needs effect.kappa > 0: the null scenario is natalizumab "
            "acting alike on every subset (one kappa), not acting at all"
        )
    if effect.kappa_by_subset is None:
        raise ValueError(
            "the mechanism question needs effect.kappa_by_subset (the alternative), "
            "e.g. { Th1 = 0.4, Th17 = 0.4, Treg = 0.55 }"
        )
    named = {"Treg", *(e.rsplit("_", 1)[-1] for e in endpoints)}
    missing = sorted(named - set(effect.kappa_by_subset))
    if missing:
        raise ValueError(f"effect.kappa_by_subset lacks {', '.join(missing)}")


#: Why rates alone cannot answer the mechanism question when sigma may differ by subset.
UNIDENTIFIED = (
    "effect.sigma_by_subset with trial.measurements = ['rates']: with a spread of log CD49d per "
    "subset, positive rates identify each subset's probit shift, log(1 - kappa_s rho) / "
    "sigma_s, and a kappa_s and sigma_s per subset match any of them, so kappa_difference is "
    "not identified and no n suffices (on a simulated cohort of the study's design its "
    "posterior SD stayed at its prior's 0.13; README, 'Median fluorescence'). Add 'mfi' to "
    "trial.measurements, or leave out effect.sigma_by_subset to plan under one sigma for all "
    "subsets (an assumption)"
)


def check_identified(effect: Effect, trial: Trial) -> None:
    """A sigma per subset needs the MFI; and it must name every subset the endpoints compare."""
    if effect.sigma_by_subset is None:
        return
    if not trial.measures_mfi:
        raise ValueError(UNIDENTIFIED)
    named = {"Treg", *(e.rsplit("_", 1)[-1] for e in trial.endpoints)}
    missing = sorted(named - set(effect.sigma_by_subset))
    if missing:
        raise ValueError(f"effect.sigma_by_subset lacks {', '.join(missing)}")


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
