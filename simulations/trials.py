"""Generate: simulated trials drawn from the package's own joint model (``models.exacerbation``).

A cell of a plan is one design at one ``n`` under one scenario (``alternative``: the plan's
effect; ``null`` and, for the biomarker question, ``null_ratio``: the question's nulls, below,
the type-I-error runs). For each cell the model is built once on
the cell's design, its global parameters are replaced by shared variables (``pm.do``) and the
forward sampler is compiled once; each replicate then sets the events per gate, the parameters
(fixed, or one posterior draw of a design-prior fit for assurance) and the sampler's seed.

Designs (``n`` is always the number of natalizumab-treated patients):

- ``cross_sectional``: ``n`` MS_NTZ and ``round(n x allocation)`` MS_naive patients;
- ``paired``: ``n`` patients, each sampled before natalizumab (group MS_naive) and at trough
  under it (MS_NTZ), two ``subject_id`` rows linked by ``patient_id``; the within-patient
  correlation is the model's subject effects, which the two samples share;
- ``prognostic``: ``n`` MS_NTZ patients followed for the plan's months; the exacerbation
  intercept is the logit of the probability of an exacerbation during follow-up.

Scenarios by the plan's question:

- ``biomarker``: the alternative is the plan's shared ``kappa``. Two nulls: ``null``,
  ``kappa = 0`` and so no probit shift (natalizumab leaves detectable CD49d unchanged, so every
  ratio fold change is 1), and ``null_ratio``, "the drug acts, the ratio does not move": the
  plan's ``kappa`` in the effector subset of its first endpoint, and Treg's (then the other
  effector's) kappa solved so that every population CD49d ratio fold change is exactly 1
  (``ratio_null_kappas``; trials from the per-subset-kappa model). Not run with a design prior
  (its kappa would need solving per draw), nor when ``kappa`` is 0;
- ``mechanism``: trials come from the per-subset-kappa model (``kappa="per_subset"``, one
  common sigma). The alternative is ``effect.kappa_by_subset`` (a subset it leaves out takes
  ``effect.kappa``); the null is ``effect.kappa`` in every subset: natalizumab acts, alike on
  every subset, so every subset's rate moves by the same probit shift and Treg lose relatively
  more CD49d+ cells only through where their expression sits relative to the gate;
- ``prognosis``: the null is ``exacerbation_log_or = 0``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import xarray as xr
from pymc.pytensorf import compile as compile_function
from pymc.pytensorf import reseed_rngs
from pytensor.tensor.random.variable import RandomGeneratorSharedVariable
from scipy import optimize
from scipy.special import logit

from models import exacerbation
from models.data import Cohort
from models.schema import NAIVE_GROUP, TREATED_GROUP
from simulations.analyses import endpoint_subset
from simulations.cohort import (
    CohortConfig,
    design_frame,
    fixed_parameters,
    load_config,
    natural_to_model,
    of_model,
    with_mfi,
)
from simulations.cohort import outcome_frame as cohort_outcome_frame
from simulations.plan import Plan
from simulations.seeds import replicate_seeds

#: Global parameters of the generating model (free variables, model scale).
GLOBALS = (
    "location_probit",
    "tau_subject",
    "tau_subject_subset",
    "tau_visit",
    "saturation_logit_mean",
    "saturation_logit_sd",
    "kappa",
    "mean_probit_shift",
    "exacerbation_intercept",
    "exacerbation_log_or",
)
#: What the null scenario zeroes, by question: no loss of detectable CD49d (kappa = 0, so no
#: probit shift), no association with exacerbation, or nothing (the mechanism null sets kappa
#: alike in every subset, ``plan_parameters``).
NULL_ZEROED = {
    "biomarker": ("kappa", "mean_probit_shift"),
    "mechanism": (),
    "prognosis": ("exacerbation_log_or",),
}


@dataclass(frozen=True)
class Cell:
    """One design point of a plan."""

    scenario: str
    n: int

    @property
    def cell_id(self) -> str:
        return f"{self.scenario}-n{self.n:04d}"


def cohort_config(plan: Plan) -> CohortConfig:
    """The cohort configuration whose parameters and gate sizes the plan builds on (with an MFI
    reading on every row when the plan measures it)."""
    config = load_config(plan.effect.cohort_config)
    return with_mfi(config) if plan.trial.measures_mfi else config


def design_rows(plan: Plan, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Subjects x subsets of one trial with drawn events per gate, outcomes blank."""
    config = cohort_config(plan)
    design = plan.trial.design
    naive = {"cross_sectional": round(n * plan.trial.allocation), "paired": n, "prognostic": 0}
    scale = plan.effect.events_per_gate_scale or 1.0
    events = {subset: median * scale for subset, median in config.events_median.items()}
    sized = replace(
        config, group_sizes={"MS_naive": naive[design], "MS_NTZ": n}, events_median=events
    )
    frame = design_frame(sized, rng)
    if design == "paired":
        number = frame["subject_id"].str.extract(r"(\d+)$", expand=False)
        frame["patient_id"] = "P" + number
    return frame


def plan_parameters(plan: Plan, cell: Cell) -> dict[str, np.ndarray]:
    """Fixed generating parameters (model scale) for a cell: the config's, with the plan's
    effect overrides, the follow-up's exacerbation intercept and the null's zero effect."""
    config = cohort_config(plan)
    effect = plan.effect
    natural = dict(config.parameters)
    if effect.kappa is not None:
        natural["kappa"] = effect.kappa
    if plan.question == "mechanism":
        natural["kappa"] = subset_kappas(plan, config, cell.scenario)
        if effect.sigma_by_subset is not None:
            natural["sigma_by_subset"] = effect.sigma_by_subset
    if cell.scenario == "null_ratio":
        natural["kappa"] = ratio_null_kappas_cached(plan)
    overridable = ("saturation_mean", "saturation_sd", "tau_subject", "tau_subject_subset")
    for name in (*overridable, "visit_sd"):
        if getattr(effect, name) is not None:
            natural[name] = getattr(effect, name)
    values = fixed_parameters(replace(config, parameters=natural))
    if effect.exacerbation_log_or is not None:
        values["exacerbation_log_or"] = effect.exacerbation_log_or
    values["exacerbation_intercept"] = float(logit(plan.trial.event_probability))
    values = {name: np.asarray(value, dtype=float) for name, value in values.items()}
    return null_effect(plan, values) if cell.scenario == "null" else values


_RATIO_NULLS: dict[str, list[float]] = {}


def ratio_null_kappas_cached(plan: Plan) -> list[float]:
    key = plan.result_hash()
    if key not in _RATIO_NULLS:
        _RATIO_NULLS[key] = ratio_null_kappas(plan)
    return _RATIO_NULLS[key]


def subset_kappas(plan: Plan, config: CohortConfig, scenario: str) -> list[float]:
    """Kappa per subset (the config's subset order) of a mechanism plan's scenario."""
    alternative = plan.effect.kappa_by_subset or {}
    unknown = sorted(set(alternative) - set(config.spec.subsets))
    if unknown:
        raise ValueError(
            f"effect.kappa_by_subset names {', '.join(unknown)}, which the cohort configuration "
            f"lacks (its subsets: {', '.join(config.spec.subsets)})"
        )
    shared = float(plan.effect.kappa)
    if scenario == "null":
        return [shared] * len(config.spec.subsets)
    return [float(alternative.get(subset, shared)) for subset in config.spec.subsets]


def plan_scenarios(plan: Plan, *, design_prior: bool = False) -> tuple[str, ...]:
    """The plan's scenarios: the alternative and its question's nulls (module docstring)."""
    if not plan.replicates.null:
        return ("alternative",)
    ratio_null = plan.question == "biomarker" and not design_prior and shared_kappa(plan) > 0
    return ("alternative", "null", "null_ratio") if ratio_null else ("alternative", "null")


def is_null(scenario: str) -> bool:
    return scenario.startswith("null")


def shared_kappa(plan: Plan) -> float:
    kappa = plan.effect.kappa
    return float(cohort_config(plan).parameters["kappa"] if kappa is None else kappa)


def kappa_variant(plan: Plan, scenario: str = "alternative") -> str:
    """The generating model's kappa: one per subset for the mechanism question and the
    biomarker question's ``null_ratio``."""
    per_subset = plan.question == "mechanism" or scenario == "null_ratio"
    return "per_subset" if per_subset else "shared"


def ratio_null_kappas(plan: Plan) -> list[float]:
    """Kappa per subset (config order) under which natalizumab acts and no CD49d ratio moves.

    The effector subset of the plan's first endpoint keeps the plan's ``kappa``; Treg's kappa
    is solved (Brent) so that that subset's population ratio fold change (the model's
    ``pct_pos``, treated over naive) is 1, then each other effector's so that its ratio's is 1.

    Raises
    ------
    ValueError
        If no kappa in (0, 1) makes a fold change 1.
    """
    config = cohort_config(plan)
    subsets = list(config.spec.subsets)
    reference = subsets.index(config.spec.reference_subset)
    anchor = subsets.index(endpoint_subset(plan.trial.endpoints[0]))
    fold_change = PopulationRates(plan).fold_change
    kappas = [shared_kappa(plan)] * len(subsets)

    def solve(index: int, target: int) -> float:
        def gap(value: float) -> float:
            trial = list(kappas)
            trial[index] = value
            return fold_change(trial)[target] - 1.0

        low, high = 1e-6, 1 - 1e-6
        if gap(low) * gap(high) > 0:
            raise ValueError(
                f"no kappa of {subsets[index]} in (0, 1) makes the {subsets[target]}/"
                f"{subsets[reference]} fold change 1"
            )
        return float(optimize.brentq(gap, low, high, xtol=1e-10))

    kappas[reference] = solve(reference, anchor)
    for index in range(len(subsets)):
        if index not in (reference, anchor):
            kappas[index] = solve(index, index)
    return kappas


class PopulationRates:
    """The model's population-average positive rates for a kappa per subset (compiled once)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.config = cohort_config(plan)
        template = design_rows(plan, plan.trial.n[0], np.random.default_rng(0))
        cohort = Cohort.from_frame(template, self.config.spec, source="design")
        model = exacerbation.build_model(cohort, observed=False, kappa="per_subset")
        self.base = of_model(plan_parameters(plan, Cell("alternative", plan.trial.n[0])), model)
        self.subsets = list(self.config.spec.subsets)
        self.base["kappa"] = np.full(len(self.subsets), float(np.ravel(self.base["kappa"])[0]))
        self.shared = {k: pytensor.shared(np.asarray(v, dtype=float)) for k, v in self.base.items()}
        groups = list(model.coords["group"])
        pct = pm.do(model, self.shared)["pct_pos"]
        self.rows = [groups.index(NAIVE_GROUP), groups.index(TREATED_GROUP)]
        self.function = compile_function(inputs=[], outputs=pct)

    def fold_change(self, kappas: list[float]) -> np.ndarray:
        """Per subset: its CD49d ratio to the reference, treated over naive (1 at the reference)."""
        p = self.config.parameters
        values = natural_to_model(
            sigma=float(p["sigma"]),
            kappa=np.asarray(kappas, dtype=float),
            saturation_mean=float(self.plan.effect.saturation_mean or p["saturation_mean"]),
            saturation_sd=float(p["saturation_sd"]),
            reference=self.subsets.index(self.config.spec.reference_subset),
        )
        for name, value in values.items():
            self.shared[name].set_value(np.asarray(value, dtype=float))
        pct = self.function()
        naive, treated = pct[self.rows[0]], pct[self.rows[1]]
        reference = self.subsets.index(self.config.spec.reference_subset)
        return (treated / treated[reference]) / (naive / naive[reference])


def null_effect(plan: Plan, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    zeroed = NULL_ZEROED[plan.question]
    return {**values, **{name: np.zeros_like(values[name]) for name in zeroed}}


class DesignPrior:
    """Posterior draws of a fit (``fit.nc``) used as the design prior (assurance).

    Each replicate takes one posterior draw of the global parameters; the exacerbation
    intercept stays the plan's (it depends on follow-up), and the null scenario still zeroes
    the effect.

    Raises
    ------
    ValueError
        If the fit lacks a generating parameter (a positive_rate fit, say).
    """

    def __init__(self, path: Path | str) -> None:
        posterior = xr.open_datatree(path)["posterior"].to_dataset()
        wanted = [name for name in GLOBALS if name != "exacerbation_intercept"]
        optional = ("exacerbation_log_or", "tau_visit")  # the plan's value where a fit lacks it
        needed = [name for name in wanted if name not in optional]
        missing = [name for name in needed if name not in posterior]
        if missing:
            raise ValueError(
                f"{path}: the design prior must be a fit of a latent-expression model "
                f"(saturation or exacerbation); it lacks {', '.join(missing)}"
            )
        stacked = posterior[[n for n in wanted if n in posterior]].stack(sample=("chain", "draw"))
        self.draws = {name: np.moveaxis(stacked[name].values, -1, 0) for name in stacked.data_vars}
        self.size = next(iter(self.draws.values())).shape[0]

    def parameters(self, base: dict[str, np.ndarray], rng: np.random.Generator):
        index = int(rng.integers(self.size))
        return {**base, **{name: values[index] for name, values in self.draws.items()}}


@dataclass(frozen=True)
class ForwardSampler:
    """The joint model of one trial design compiled to draw outcomes: its generating
    parameters and events per gate are shared variables, set before each draw."""

    model: pm.Model
    shared: dict
    n_cells: object
    function: object
    rngs: list


#: Compiled samplers of this process by what decides their graph (``sampler_key``): the
#: scenarios and sensitivity variants of a plan at one n share one (compiling took about 0.4 s
#: a cell, and the biomarker cross-sectional plan has 64 cells, each compiled by every worker).
_SAMPLERS: dict[tuple, ForwardSampler] = {}
SAMPLER_CACHE_SIZE = 32


def sampler_key(plan: Plan, template: pd.DataFrame, kappa: str, parameters: dict) -> tuple:
    """What the compiled graph depends on: the cohort configuration, the kappa variant, the
    parameters' names and shapes, and the design (the template's rows but not its events per
    gate, which are set per draw)."""
    design = template.drop(columns="n_cells").to_csv(index=False)
    shapes = tuple(sorted((name, np.shape(value)) for name, value in parameters.items()))
    return (str(plan.effect.cohort_config), kappa, shapes, hashlib.sha256(design.encode()).digest())


def forward_sampler(plan: Plan, template: pd.DataFrame, kappa: str, parameters: dict):
    """The compiled sampler of a design, once per process (``_SAMPLERS``)."""
    key = sampler_key(plan, template, kappa, parameters)
    if key not in _SAMPLERS:
        if len(_SAMPLERS) >= SAMPLER_CACHE_SIZE:
            _SAMPLERS.pop(next(iter(_SAMPLERS)))
        _SAMPLERS[key] = compile_sampler(plan, template, kappa, parameters)
    return _SAMPLERS[key]


def compile_sampler(
    plan: Plan, template: pd.DataFrame, kappa: str, parameters: dict
) -> ForwardSampler:
    cohort = Cohort.from_frame(template, cohort_config(plan).spec, source="design")
    model = exacerbation.build_model(cohort, observed=False, kappa=kappa)
    base = of_model(parameters, model)
    shared = {name: pytensor.shared(value, name=name) for name, value in base.items()}
    intervened = pm.do(model, shared)
    outcomes = ["n_cd49d_pos", "exacerbation"]
    if "log_mfi_ratio" in model.named_vars:
        outcomes.append("log_mfi_ratio")
    function = compile_function(
        inputs=[], outputs=[intervened[name] for name in outcomes], random_seed=0
    )
    rngs = [v for v in function.get_shared() if isinstance(v, RandomGeneratorSharedVariable)]
    return ForwardSampler(model, shared, intervened["n_cells"], function, rngs)


class TrialGenerator:
    """Draws trials of one cell from a compiled forward sampler (shared by the cells of one
    design: each draw sets every generating parameter, the events per gate and the seeds)."""

    def __init__(self, plan: Plan, cell: Cell, design_prior: DesignPrior | None = None) -> None:
        self.plan, self.cell, self.design_prior = plan, cell, design_prior
        self.template = design_rows(plan, cell.n, np.random.default_rng(0))
        parameters = plan_parameters(plan, cell)
        kappa = kappa_variant(plan, cell.scenario)
        self.sampler = forward_sampler(plan, self.template, kappa, parameters)
        self.treated = self.sampler.model.coords["treated_subject"]
        self.base = of_model(parameters, self.sampler.model)

    def draw_replicates(self, count: int) -> tuple[list[pd.DataFrame], list[int]]:
        """The cell's replicates 0 to ``count - 1`` with the seeds of ``replicate_seeds``
        (under ``Plan.result_hash``), and each one's analysis seed: trials for tests and
        benchmarks that must not depend on how they are run."""
        plan, cell = self.plan, self.cell
        frames, analysis_seeds = [], []
        for rep in range(count):
            seeds = replicate_seeds(plan.root_seed, plan.result_hash(), cell.scenario, cell.n, rep)
            frames.append(self.draw(seeds.data))
            analysis_seeds.append(seeds.analysis)
        return frames, analysis_seeds

    def draw(self, seed: int) -> pd.DataFrame:
        """One simulated trial in the cohort schema (plus ``patient_id`` when paired)."""
        rng = np.random.default_rng(seed)
        design = design_rows(self.plan, self.cell.n, rng)
        parameters = self.base
        if self.design_prior is not None:
            parameters = self.design_prior.parameters(self.base, rng)
            parameters = (
                null_effect(self.plan, parameters) if self.cell.scenario == "null" else (parameters)
            )
        sampler = self.sampler
        for name, value in parameters.items():
            if name in sampler.shared:  # a design prior's tau_visit: only a paired design's
                sampler.shared[name].set_value(np.asarray(value, dtype=float))
        sampler.n_cells.set_value(design["n_cells"].to_numpy().astype(sampler.n_cells.dtype))
        reseed_rngs(sampler.rngs, int(rng.integers(2**32)))
        counts, events, *mfi = sampler.function()
        frame = cohort_outcome_frame(design, self.treated, counts, events, *mfi)
        if "patient_id" in design.columns:
            frame["patient_id"] = design["patient_id"].to_numpy()
        return frame
