"""The simulated cohort with the study's exact design, drawn from the package's own model.

The joint latent-expression and exacerbation model (``models.exacerbation``) is built on the
design (subjects, groups, events per gate), its parameters are fixed to the documented values of
``configs/kimura2016_cohort.toml`` by ``pm.do``, and counts and exacerbations are drawn from
that graph. No other code here writes the model.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from models import exacerbation
from models.data import Cohort
from models.saturation import (
    BASELINE_GROUPS,
    mean_probit_shift,
    occupancy_logit_parameters,
)
from models.schema import (
    FILE_COLUMNS,
    GROUPS,
    MFI_COLUMN,
    MFI_COLUMNS,
    MFI_GATE_COLUMN,
    PCT_COLUMN,
    TREATED_GROUP,
    CohortSpec,
)
from models.simulate import draw_with_fixed

DEFAULT_CONFIG = Path(str(resources.files("simulations") / "configs" / "kimura2016_cohort.toml"))
PARAMETERS = (
    "baseline_positive_rate",
    "sigma",
    "tau_subject",
    "tau_subject_subset",
    "saturation_mean",
    "saturation_sd",
    "kappa",
    "exacerbation_intercept",
    "exacerbation_log_or",
)
#: Parameters a configuration may leave out: (value, source) used then. ``visit_sd`` matters
#: only for designs with repeated samples of a patient (the paired design).
OPTIONAL_PARAMETERS = {
    "visit_sd": (
        0.15,
        "assumption (the bundled default): sample x subset (visit) SD of log CD49d location; "
        "see simulations/configs/visit_variation.md",
    ),
    "mfi_log_sd": (
        0.1,
        "Vogt et al. 1991 (Cytometry 12:525-536): within-laboratory CVs of cellular "
        "fluorescence intensity 3.0-9.9%; 0.1 on the log scale is the upper end. Used only "
        "when the design has MFI (design.mfi_gate)",
    ),
}
#: Gate values of a design with MFI when none are configured (``with_mfi``): the CD49d+ gate
#: boundary per subset in arbitrary linear units; only their ratio to the MFI enters the model.
DEFAULT_MFI_GATE = 1000.0


class ConfigError(ValueError):
    """A cohort configuration file is missing a key or holds an impossible value."""


class CohortDrawError(ValueError):
    """No candidate draw of the model met the design's number of exacerbations."""


@dataclass(frozen=True)
class CohortConfig:
    """The parsed cohort configuration; see the TOML file for the meaning of each entry."""

    seed: int
    candidate_draws: int
    group_sizes: dict[str, int]
    exacerbations: int
    spec: CohortSpec
    subject_prefix: dict[str, str]
    events_median: dict[str, float]
    events_log_sd: float
    parameters: dict[str, Any]
    sources: dict[str, str]
    #: CD49d+ gate boundary per subset when the design reads MFI (``design.mfi_gate``); None:
    #: positive rates only.
    mfi_gate: dict[str, float] | None = None

    @classmethod
    def from_toml(cls, path: Path | str) -> CohortConfig:
        """Read and check a configuration file.

        Raises
        ------
        ConfigError
            Naming the file and the key that is missing or wrong.
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: cannot read configuration: {err}") from err
        try:
            return cls.from_dict(raw)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CohortConfig:
        design = raw["design"]
        events = design["events_per_gate"]
        parameters, sources = {}, {"design": design["source"], "events_per_gate": events["source"]}
        for name in PARAMETERS:
            entry = raw["parameters"][name]
            if not str(entry.get("source", "")).strip():
                raise ValueError(f"parameters.{name} has no source")
            parameters[name], sources[name] = entry["value"], entry["source"]
        for name, (value, source) in OPTIONAL_PARAMETERS.items():
            entry = raw["parameters"].get(name, {"value": value, "source": source})
            if not str(entry.get("source", "")).strip():
                raise ValueError(f"parameters.{name} has no source")
            parameters[name], sources[name] = entry["value"], entry["source"]
        config = cls(
            seed=int(raw["seed"]),
            candidate_draws=int(raw["candidate_draws"]),
            group_sizes={g: int(n) for g, n in design["group_sizes"].items()},
            exacerbations=int(design["exacerbations"]),
            spec=CohortSpec(tuple(design["subsets"]), design["reference_subset"]),
            subject_prefix=dict(design["subject_prefix"]),
            events_median={k: float(v) for k, v in events["median"].items()},
            events_log_sd=float(events["log_sd"]),
            parameters=parameters,
            sources=sources,
            mfi_gate=mfi_gate_values(design.get("mfi_gate")),
        )
        config.check()
        return config

    def check(self) -> None:
        unknown = set(self.group_sizes) - set(GROUPS)
        if unknown:
            raise ValueError(f"design.group_sizes: unknown groups {sorted(unknown)}")
        if any(n < 0 for n in self.group_sizes.values()):
            raise ValueError("design.group_sizes: negative group size")
        if not 0 <= self.exacerbations <= self.group_sizes.get(TREATED_GROUP, 0):
            raise ValueError("design.exacerbations must lie between 0 and the MS_NTZ group size")
        if set(self.events_median) != set(self.spec.subsets):
            raise ValueError("design.events_per_gate.median must name every subset")
        if self.mfi_gate is not None and set(self.mfi_gate) != set(self.spec.subsets):
            raise ValueError("design.mfi_gate must name every subset")
        if self.candidate_draws < 1:
            raise ValueError("candidate_draws must be at least 1")
        rates = self.parameters["baseline_positive_rate"]
        wrong = [
            f"{group}.{subset}"
            for group in BASELINE_GROUPS
            for subset in self.spec.subsets
            if not 0 < float(rates.get(group, {}).get(subset, np.nan)) < 1
        ]
        if wrong:
            raise ValueError(
                "parameters.baseline_positive_rate needs a rate strictly between 0 and 1 for "
                f"{', '.join(wrong)}"
            )
        fixed_parameters(self)  # every value converts to the model's scale, or ValueError


def mfi_gate_values(table: dict | None) -> dict[str, float] | None:
    """``design.mfi_gate``: a positive gate value per subset, or None (no MFI)."""
    if table is None:
        return None
    values = {subset: float(value) for subset, value in table.items()}
    bad = [subset for subset, value in values.items() if not value > 0]
    if bad:
        raise ValueError(f"design.mfi_gate must be above 0 (not for {', '.join(bad)})")
    return values


def with_mfi(config: CohortConfig) -> CohortConfig:
    """The same design with an MFI reading per row (the configured gate values, or
    ``DEFAULT_MFI_GATE`` in every subset)."""
    gates = config.mfi_gate or {subset: DEFAULT_MFI_GATE for subset in config.spec.subsets}
    return replace(config, mfi_gate=gates)


def load_config(path: Path | str | None = None) -> CohortConfig:
    """The configuration at ``path``, or the bundled one."""
    return CohortConfig.from_toml(path or DEFAULT_CONFIG)


def design_frame(config: CohortConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Subjects x subsets with drawn events per gate (log-normal), outcomes left blank."""
    rows = []
    for group in GROUPS:
        width = max(2, len(str(config.group_sizes.get(group, 0))))
        for k in range(1, config.group_sizes.get(group, 0) + 1):
            subject = f"{config.subject_prefix[group]}{k:0{width}d}"
            rows += [
                {"subject_id": subject, "group": group, "subset": subset}
                for subset in config.spec.subsets
            ]
    frame = pd.DataFrame(rows)
    medians = frame["subset"].map(config.events_median).to_numpy()
    noise = rng.normal(0.0, config.events_log_sd, size=len(frame))
    frame["n_cells"] = np.round(medians * np.exp(noise)).astype("int64")
    for column in ("n_cd49d_pos", PCT_COLUMN, "exacerbation"):
        frame[column] = np.nan
    if config.mfi_gate is not None:
        frame[MFI_COLUMN] = np.nan
        frame[MFI_GATE_COLUMN] = frame["subset"].map(config.mfi_gate).astype(float)
    return frame


def fixed_parameters(config: CohortConfig) -> dict[str, np.ndarray | float]:
    """The config's natural-unit values as values of the model's free variables.

    The model samples location and subject SDs on the probit scale (units of sigma), occupancy
    as a logit-normal and the mean probit shift of treated patients instead of sigma
    (``models.saturation``); the config states natural units, converted here. ``tau_visit``
    is a variable only of models of cohorts with repeated samples, ``mfi_log_sd`` only of
    designs with MFI (``of_model`` keeps a model's own). A design with MFI gets sigma per
    subset: its model samples sigma (``models.saturation``); the parameters' optional
    ``sigma_by_subset`` (a power plan's) sets it subset by subset, while the subject SDs stay
    in units of the one ``sigma``.
    """
    p = config.parameters
    kappa = p["kappa"]  # one kappa, or one per subset (spec order) for the per-subset model
    values = natural_to_model(
        sigma=float(p["sigma"]),
        kappa=float(kappa) if np.ndim(kappa) == 0 else np.asarray(kappa, dtype=float),
        saturation_mean=float(p["saturation_mean"]),
        saturation_sd=float(p["saturation_sd"]),
        reference=list(config.spec.subsets).index(config.spec.reference_subset),
        subsets=len(config.spec.subsets) if config.mfi_gate is not None else None,
    )
    if config.mfi_gate is not None and p.get("sigma_by_subset"):  # a plan's spread per subset
        values["sigma"] = np.array([p["sigma_by_subset"][s] for s in config.spec.subsets])
    subsets = list(config.spec.subsets)
    rate = np.array([[p["baseline_positive_rate"][g][s] for s in subsets] for g in BASELINE_GROUPS])
    sigma = float(p["sigma"])
    return {
        "location_probit": stats.norm.ppf(rate),
        "tau_subject": float(p["tau_subject"]) / sigma,
        "tau_subject_subset": float(p["tau_subject_subset"]) / sigma,
        "tau_visit": float(p["visit_sd"]) / sigma,
        **values,
        "exacerbation_intercept": float(p["exacerbation_intercept"]),
        "exacerbation_log_or": float(p["exacerbation_log_or"]),
        "mfi_log_sd": float(p["mfi_log_sd"]),
    }


def of_model(values: dict, model) -> dict:
    """The entries of ``values`` that name variables of ``model``."""
    return {name: value for name, value in values.items() if name in model.named_vars}


def natural_to_model(
    *,
    sigma: float,
    kappa,
    saturation_mean: float,
    saturation_sd: float,
    reference: int,
    subsets: int | None = None,
) -> dict[str, float | np.ndarray]:
    """Occupancy, kappa and sigma in natural units as the saturation model's free variables:
    the mean probit shift in place of sigma, or with ``subsets`` (the model of a design with
    MFI, which samples a sigma per subset) sigma itself in every subset."""
    logit_mean, logit_sd = occupancy_logit_parameters(saturation_mean, saturation_sd)
    values = {"saturation_logit_mean": logit_mean, "saturation_logit_sd": logit_sd, "kappa": kappa}
    if subsets is None:
        shift = mean_probit_shift(sigma, kappa, logit_mean, logit_sd, reference)
        return {**values, "mean_probit_shift": shift}
    return {**values, "sigma": np.full(subsets, float(sigma))}


def simulate_cohort(config: CohortConfig, *, seed: int | None = None) -> pd.DataFrame:
    """Draw one cohort with the configured design, in the cohort file schema.

    Parameters
    ----------
    config
        The cohort configuration.
    seed
        Root seed; defaults to ``config.seed``. Child seeds for the events per gate and for the
        model draws come from ``numpy.random.SeedSequence(seed).spawn(2)``.

    Returns
    -------
    pandas.DataFrame
        Columns as ``models.schema.FILE_COLUMNS``.

    Raises
    ------
    CohortDrawError
        If no candidate draw has the design's number of exacerbations.
    """
    events_seed, model_seed = np.random.SeedSequence(config.seed if seed is None else seed).spawn(2)
    design = design_frame(config, np.random.default_rng(events_seed))
    cohort = Cohort.from_frame(design, config.spec, source="design")
    model = exacerbation.build_model(cohort, observed=False, kappa=kappa_of(config))
    outcomes = ["n_cd49d_pos", "exacerbation"]
    draws = draw_with_fixed(
        model,
        of_model(fixed_parameters(config), model),
        outcomes + (["log_mfi_ratio"] if config.mfi_gate is not None else []),
        draws=config.candidate_draws,
        seed=int(model_seed.generate_state(1)[0]),
    )
    events = draws["exacerbation"].sum(axis=1)
    matching = np.flatnonzero(events == config.exacerbations)
    if not len(matching):
        treated = config.group_sizes.get(TREATED_GROUP, 0)
        raise CohortDrawError(
            f"none of {config.candidate_draws} draws had {config.exacerbations} exacerbations "
            f"among {treated} MS_NTZ patients (they had {int(events.min())} to "
            f"{int(events.max())}, median {np.median(events):g}): set "
            "parameters.exacerbation_intercept so that the expected number is near "
            "design.exacerbations (logit of their share), or raise candidate_draws"
        )
    chosen = matching[0]
    return outcome_frame(
        design,
        model.coords["treated_subject"],
        draws["n_cd49d_pos"][chosen],
        draws["exacerbation"][chosen],
        draws["log_mfi_ratio"][chosen] if "log_mfi_ratio" in draws else None,
    )


def kappa_of(config: CohortConfig) -> str:
    """The generating model's kappa variant: one per subset when the config gives several."""
    return "shared" if np.ndim(config.parameters["kappa"]) == 0 else "per_subset"


def outcome_frame(
    design: pd.DataFrame,
    treated: list[str],
    counts: np.ndarray,
    events: np.ndarray,
    log_mfi_ratio: np.ndarray | None = None,
) -> pd.DataFrame:
    """The design's rows with drawn outcomes, in the cohort file schema (MFI columns when the
    design has gate values: every row's, in row order)."""
    frame = design.copy()
    frame["n_cd49d_pos"] = counts.astype("int64")
    frame[PCT_COLUMN] = 100 * frame["n_cd49d_pos"] / frame["n_cells"]
    frame["exacerbation"] = frame["subject_id"].map(dict(zip(treated, events, strict=True)))
    columns = list(FILE_COLUMNS)
    if log_mfi_ratio is not None:
        frame[MFI_COLUMN] = frame[MFI_GATE_COLUMN] * np.exp(log_mfi_ratio)
        columns += list(MFI_COLUMNS)
    return frame[columns]


def cohort_csv_text(frame: pd.DataFrame) -> str:
    """Render a simulated cohort as CSV with fixed formatting (2-decimal percentages, MFI to one
    decimal as FlowJo writes it)."""
    out = frame.copy()
    out[PCT_COLUMN] = out[PCT_COLUMN].map(lambda v: f"{v:.2f}")
    for column in [c for c in MFI_COLUMNS if c in out.columns]:
        out[column] = out[column].map(lambda v: f"{v:.1f}")
    out["exacerbation"] = out["exacerbation"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return out.to_csv(index=False, lineterminator="\n")
