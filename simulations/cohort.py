"""The simulated cohort with the study's exact design, drawn from the package's own model.

The joint latent-expression and exacerbation model (``models.exacerbation``) is built on the
design (subjects, groups, events per gate), its parameters are fixed to the documented values of
``configs/kimura2016_cohort.toml`` by ``pm.do``, and counts and exacerbations are drawn from
that graph. No other code here writes the model.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
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
from models.schema import FILE_COLUMNS, GROUPS, PCT_COLUMN, TREATED_GROUP, CohortSpec
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
}


class ConfigError(ValueError):
    """A cohort configuration file is missing a key or holds an impossible value."""


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
    return frame


def fixed_parameters(config: CohortConfig) -> dict[str, np.ndarray | float]:
    """The config's natural-unit values as values of the model's free variables.

    The model samples location and subject SDs on the probit scale (units of sigma), occupancy
    as a logit-normal and the mean probit shift of treated patients instead of sigma
    (``models.saturation``); the config states natural units, converted here. ``tau_visit``
    is a variable only of models of cohorts with repeated samples (``of_model`` keeps a
    model's own).
    """
    p = config.parameters
    kappa = p["kappa"]  # one kappa, or one per subset (spec order) for the per-subset model
    values = natural_to_model(
        sigma=float(p["sigma"]),
        kappa=float(kappa) if np.ndim(kappa) == 0 else np.asarray(kappa, dtype=float),
        saturation_mean=float(p["saturation_mean"]),
        saturation_sd=float(p["saturation_sd"]),
        reference=list(config.spec.subsets).index(config.spec.reference_subset),
    )
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
    }


def of_model(values: dict, model) -> dict:
    """The entries of ``values`` that name variables of ``model``."""
    return {name: value for name, value in values.items() if name in model.named_vars}


def natural_to_model(
    *, sigma: float, kappa, saturation_mean: float, saturation_sd: float, reference: int
) -> dict[str, float | np.ndarray]:
    """Occupancy, kappa and sigma in natural units as the saturation model's free variables."""
    logit_mean, logit_sd = occupancy_logit_parameters(saturation_mean, saturation_sd)
    return {
        "saturation_logit_mean": logit_mean,
        "saturation_logit_sd": logit_sd,
        "kappa": kappa,
        "mean_probit_shift": mean_probit_shift(sigma, kappa, logit_mean, logit_sd, reference),
    }


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
    RuntimeError
        If no candidate draw has the design's number of exacerbations.
    """
    events_seed, model_seed = np.random.SeedSequence(config.seed if seed is None else seed).spawn(2)
    design = design_frame(config, np.random.default_rng(events_seed))
    cohort = Cohort.from_frame(design, config.spec, source="design")
    model = exacerbation.build_model(cohort, observed=False)
    draws = draw_with_fixed(
        model,
        of_model(fixed_parameters(config), model),
        ["n_cd49d_pos", "exacerbation"],
        draws=config.candidate_draws,
        seed=int(model_seed.generate_state(1)[0]),
    )
    matching = np.flatnonzero(draws["exacerbation"].sum(axis=1) == config.exacerbations)
    if not len(matching):
        raise RuntimeError(
            f"none of {config.candidate_draws} draws had "
            f"{config.exacerbations} exacerbations; raise candidate_draws"
        )
    chosen = matching[0]
    return outcome_frame(
        design,
        model.coords["treated_subject"],
        draws["n_cd49d_pos"][chosen],
        draws["exacerbation"][chosen],
    )


def outcome_frame(
    design: pd.DataFrame, treated: list[str], counts: np.ndarray, events: np.ndarray
) -> pd.DataFrame:
    frame = design.copy()
    frame["n_cd49d_pos"] = counts.astype("int64")
    frame[PCT_COLUMN] = 100 * frame["n_cd49d_pos"] / frame["n_cells"]
    frame["exacerbation"] = frame["subject_id"].map(dict(zip(treated, events, strict=True)))
    return frame[list(FILE_COLUMNS)]


def cohort_csv_text(frame: pd.DataFrame) -> str:
    """Render a simulated cohort as CSV with fixed formatting (2-decimal percentages)."""
    out = frame.copy()
    out[PCT_COLUMN] = out[PCT_COLUMN].map(lambda v: f"{v:.2f}")
    out["exacerbation"] = out["exacerbation"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return out.to_csv(index=False, lineterminator="\n")


def write_atomically(text: str, path: Path | str) -> None:
    """Write text to ``path`` through a temporary file and a rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
