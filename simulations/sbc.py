"""Simulation-based calibration of a model (Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

If a model is fitted correctly, the rank of a parameter's true value among posterior draws is
uniform when the truth is drawn from the prior and the data from the model. For each of
``draws`` replicates, SBC here

- **generates**: draws every free variable from the prior and a cohort of the study's design
  (group sizes of ``simulations/configs``; events per gate drawn anew) from the model's own graph
  (``observed=False``, compiled once, reseeded per replicate);
- **analyses**: refits the same model (or, to show that SBC can fail, a model with other priors:
  ``fit_priors``) with the batched sampler (``models.batch``), behind the gate; records, for
  every top-level parameter, every estimand (``models.estimands``, computed from the true
  parameters by the same code as from the posterior) and the log-likelihood of the data
  (Modrak, Moon, Kim, Burkner, Huurre, Faltejskova, Gelman & Vehtari 2023), the rank of the true
  value among ``THINNED`` thinned posterior draws, the posterior mean and variance;
- **summarises** (``simulations.sbc_summary``): rank ECDFs against uniform with simultaneous
  bands (Sailynoja, Burkner & Vehtari 2022) and the contraction of each quantity.

A replicate whose fit fails the gate is stored with its status, its true values and the gate's
message, and counted in every table; it has no ranks (a non-converged posterior ranks nothing),
which the summary states.

Seeds: replicate ``i`` draws from ``SeedSequence(root_seed, spawn_key=(model code, i))``, whose
two children seed the data and the fit, so results do not depend on workers or chunking.
Results are stored one Parquet file per chunk of replicates under ``out/records``; a rerun skips
stored chunks, and a folder holding another configuration is refused.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr
from pymc.model.transform.conditioning import remove_value_transforms
from pymc.pytensorf import compile as compile_function
from pymc.pytensorf import reseed_rngs
from pytensor.tensor.random.variable import RandomGeneratorSharedVariable
from tqdm.auto import tqdm

from models.batch import MODEL_SETTINGS, BatchSampler, BatchSettings
from models.data import Cohort
from models.estimands import estimand_draws
from models.names import MODEL_NAMES
from models.registry import MODELS
from models.sensitivity import SUBJECT_DIMS
from simulations.atomic import write_atomically
from simulations.cohort import cohort_csv_text, design_frame, load_config
from simulations.digests import code_digest
from simulations.store import remove_entries
from simulations.workers import run_in_workers

#: Posterior draws kept per fit for the ranks (equally spaced in each chain): ranks 0..THINNED.
THINNED = 99
LOG_LIKELIHOOD = "log_likelihood"


@dataclass(frozen=True)
class SbcConfig:
    """One SBC run: the model, its replicates and how they are fitted."""

    model: str
    draws: int
    root_seed: int = 20180412
    prior_set: str = "default"
    fit_priors: dict = field(default_factory=dict)  # prior values the refit replaces
    group_sizes: dict[str, int] | None = None  # default: the study's (bundled configuration)
    # replicates per stored file (two batches of the sampler's 4): small enough that 2 workers
    # share a small run evenly (with chunks of 32, one worker had fitted 32 of 40 replicates
    # and the other 8) and that a stopped run loses little
    chunk: int = 8
    sampler: BatchSettings = field(default_factory=lambda: BatchSettings(batch_size=4))

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}: choose from {', '.join(MODEL_NAMES)}")
        if self.draws < 1 or self.chunk < 1:
            raise ValueError("draws and chunk must be at least 1")

    def fit_settings(self) -> BatchSettings:
        """The sampler settings with the model's own (``models.batch.MODEL_SETTINGS``)."""
        return replace(self.sampler, **MODEL_SETTINGS.get(self.model, {}))

    def digest(self) -> str:
        """SHA-256 of everything that decides a replicate (not how many are run)."""
        content = asdict(self) | {"draws": None, "chunk": None}
        content["sampler"] = asdict(self.fit_settings())
        text = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def replicate_seeds(config: SbcConfig, index: int) -> tuple[int, int]:
    """The data and the fit seed of replicate ``index``."""
    code = MODEL_NAMES.index(config.model)
    sequence = np.random.SeedSequence(config.root_seed, spawn_key=(code, index))
    data, fit = (int(child.generate_state(1)[0]) for child in sequence.spawn(2))
    return data, fit


# --- Generate ---------------------------------------------------------------------------------


class PriorGenerator:
    """Draws (true parameters, cohort) pairs from a model's prior predictive, compiled once."""

    def __init__(self, config: SbcConfig) -> None:
        cohort_config = load_config()
        sizes = config.group_sizes or cohort_config.group_sizes
        self.design_config = replace(cohort_config, group_sizes=dict(sizes))
        self.spec = cohort_config.spec
        self.template = design_frame(self.design_config, np.random.default_rng(0))
        cohort = Cohort.from_frame(self.template, self.spec, source="SBC design")
        self.model = MODELS[config.model].build(cohort, config.prior_set, observed=False)
        self.outcomes = [n for n in ("n_cd49d_pos", "exacerbation") if n in self.model.named_vars]
        self.truths = truth_names(self.model)
        outputs = [self.model[n] for n in [*self.truths, *self.outcomes]]
        self.function = compile_function(inputs=[], outputs=outputs, random_seed=0)
        self.rngs = [
            v for v in self.function.get_shared() if isinstance(v, RandomGeneratorSharedVariable)
        ]
        self.n_cells = self.model["n_cells"]

    def draw(self, seed: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        """True values of the parameters and deterministics, and a cohort in the file schema."""
        rng = np.random.default_rng(seed)
        design = design_frame(self.design_config, rng)
        self.n_cells.set_value(design["n_cells"].to_numpy().astype(self.n_cells.dtype))
        reseed_rngs(self.rngs, int(rng.integers(2**32)))
        values = dict(zip([*self.truths, *self.outcomes], self.function(), strict=True))
        frame = design.copy()
        frame["n_cd49d_pos"] = values["n_cd49d_pos"].astype("int64")
        frame["pct_cd49d_pos"] = 100 * frame["n_cd49d_pos"] / frame["n_cells"]
        if "exacerbation" in values:
            treated = self.model.coords["treated_subject"]
            events = dict(zip(treated, values["exacerbation"], strict=True))
            frame["exacerbation"] = frame["subject_id"].map(events)
        return {n: np.asarray(values[n]) for n in self.truths}, frame


def truth_names(model: pm.Model) -> list[str]:
    """Free variables and deterministics: everything a posterior holds."""
    return [rv.name for rv in model.free_RVs] + [d.name for d in model.deterministics]


# --- Analyse ----------------------------------------------------------------------------------


class SbcAnalysis:
    """The refit model compiled once; ranks of true values for a batch of replicates."""

    def __init__(self, config: SbcConfig, generator: PriorGenerator) -> None:
        self.config = config
        _, template = generator.draw(0)
        cohort = Cohort.from_frame(template, generator.spec, source="SBC template")
        build = MODELS[config.model].build
        model = build(cohort, config.prior_set, overrides=config.fit_priors)
        self.data_names = tuple(v.name for v in model.data_vars)
        self.sampler = BatchSampler(model, self.data_names, config.fit_settings())
        self.spec = generator.spec
        self.parameters = top_level_parameters(model)
        self.log_likelihood = log_likelihood_function(model, self.data_names)
        self.free = [rv.name for rv in model.free_RVs]

    def analyse(
        self, cohorts: list[pd.DataFrame], truths: list[dict], seeds: list[int], indices: list[int]
    ) -> pd.DataFrame:
        """One row per (replicate, quantity): rank, posterior mean, variance and IQR, status."""
        data = [self.data_of(cohort) for cohort in cohorts]
        fits = self.sampler.fit(data, seeds)
        rows = []
        for index, fit, truth, dataset in zip(indices, fits, truths, data, strict=True):
            base = {
                "replicate": index,
                "status": "ok" if fit.passed else "not_converged",
                "attempts": "+".join(fit.attempts),
                "message": "; ".join(fit.report.failures),
            }
            for row in self.ranks(self.sampler.posterior(fit), truth, dataset, index):
                if not fit.passed:  # the truth is kept; a non-converged posterior ranks nothing
                    row |= {"rank": np.nan, "posterior_mean": np.nan, "posterior_var": np.nan}
                    row |= {"posterior_iqr": np.nan}
                rows.append({**base, **row})
        return pd.DataFrame(rows)

    def data_of(self, cohort: pd.DataFrame) -> dict[str, np.ndarray]:
        data = {
            "n_cells": cohort["n_cells"].to_numpy(),
            "observed_n_cd49d_pos": cohort["n_cd49d_pos"].to_numpy(),
        }
        if "observed_exacerbation" in self.data_names:
            treated = cohort.drop_duplicates("subject_id")
            data["observed_exacerbation"] = treated.loc[
                treated["group"] == "MS_NTZ", "exacerbation"
            ].to_numpy()
        return data

    def ranks(self, posterior: xr.Dataset, truth: dict, data: dict, index: int) -> list[dict]:
        """Rank, mean and variance of every quantity for one replicate."""
        thinned = thin(posterior)
        true_set = truth_dataset(truth, posterior)
        rows = []
        for kind, name, draws, value in quantities(thinned, true_set, self.parameters, self.spec):
            rows.append(rank_row(kind, name, draws, value, seed=index))
        draws_ll, true_ll = self.log_likelihoods(thinned, truth, data)
        rows.append(rank_row("log_likelihood", LOG_LIKELIHOOD, draws_ll, true_ll, seed=index))
        return rows

    def log_likelihoods(self, thinned: xr.Dataset, truth: dict, data: dict):
        """The data's log-likelihood at each kept draw and at the true parameters."""
        stacked = thinned.stack(sample=("chain", "draw"))
        points = [
            {name: stacked[name].isel(sample=k).values for name in self.free}
            for k in range(stacked.sizes["sample"])
        ]
        draws = np.array([self.log_likelihood(point, data) for point in points])
        return draws, self.log_likelihood({n: truth[n] for n in self.free}, data)


def top_level_parameters(model: pm.Model) -> list[str]:
    """Free variables and derived parameters without a subject-level dimension."""
    named = [rv.name for rv in model.free_RVs] + ["sigma"]
    return [
        name
        for name in named
        if name in model.named_vars
        and not SUBJECT_DIMS & set(model.named_vars_to_dims.get(name, ()))
    ]


def log_likelihood_function(model: pm.Model, data_names: tuple[str, ...]):
    """``f(point, data)``: the log-likelihood of the observed data at natural-scale values."""
    untransformed = remove_value_transforms(model)
    function = untransformed.compile_logp(vars=untransformed.observed_RVs, jacobian=False)
    shared = {v.name: v for v in untransformed.data_vars}

    def log_likelihood(point: dict, data: dict) -> float:
        for name in data_names:
            shared[name].set_value(np.asarray(data[name]).astype(shared[name].dtype))
        return float(function(point))

    return log_likelihood


def thin(posterior: xr.Dataset) -> xr.Dataset:
    """``THINNED`` draws, equally spaced within each chain (the chains' share alike)."""
    chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    per_chain = int(np.ceil(THINNED / chains))
    keep = np.linspace(0, n_draws - 1, per_chain).round().astype(int)
    stacked = posterior.isel(draw=keep).stack(sample=("chain", "draw")).isel(sample=slice(THINNED))
    values = {
        name: (
            ("chain", "draw", *stacked[name].dims[:-1]),
            np.moveaxis(stacked[name].values, -1, 0)[None],
        )
        for name in stacked.data_vars
    }
    coords = {d: posterior[d].values for d in posterior.dims if d not in ("chain", "draw")}
    return xr.Dataset(values, coords=coords | {"chain": [0], "draw": np.arange(THINNED)})


def truth_dataset(truth: dict, posterior: xr.Dataset) -> xr.Dataset:
    """The true values shaped like a one-draw posterior (same dims and coordinates)."""
    values = {
        name: (("chain", "draw", *posterior[name].dims[2:]), np.asarray(truth[name])[None, None])
        for name in posterior.data_vars
        if name in truth
    }
    coords = {d: posterior[d].values for d in posterior.dims if d not in ("chain", "draw")}
    return xr.Dataset(values, coords=coords | {"chain": [0], "draw": [0]})


def quantities(thinned: xr.Dataset, truth: xr.Dataset, parameters: list[str], spec) -> Iterator:
    """``(kind, label, thinned draws, true value)`` for every parameter and estimand element."""
    seen = set()
    groups = [("parameter", {n: thinned[n] for n in parameters}, {n: truth[n] for n in parameters})]
    groups.append(("estimand", estimand_draws(thinned, spec), estimand_draws(truth, spec)))
    for kind, draws, true_values in groups:
        for name, array in draws.items():
            for label, values, value in elements(name, array, true_values[name]):
                if label not in seen:
                    seen.add(label)
                    yield kind, label, values, value


def elements(name: str, draws: xr.DataArray, truth: xr.DataArray) -> Iterator:
    """``(label, draws, value)`` per scalar element of a variable."""
    other = [d for d in draws.dims if d not in ("chain", "draw")]
    flat = draws.transpose("chain", "draw", *other).values.reshape(
        -1, int(np.prod([draws.sizes[d] for d in other]))
    )
    true_flat = truth.transpose("chain", "draw", *other).values.reshape(-1)
    keys = list(np.ndindex(*[draws.sizes[d] for d in other])) if other else [()]
    for column, key in enumerate(keys):
        coords = [str(draws[d].values[k]) for d, k in zip(other, key, strict=True)]
        label = f"{name}[{', '.join(coords)}]" if coords else name
        yield label, flat[:, column], float(true_flat[column])


def rank_row(kind: str, name: str, draws: np.ndarray, value: float, *, seed: int) -> dict:
    """Rank of ``value`` among ``draws`` (ties broken at random), with posterior moments."""
    draws = np.asarray(draws, dtype=float)
    below, ties = int(np.sum(draws < value)), int(np.sum(draws == value))
    if ties:
        below += int(np.random.default_rng([seed, len(name)]).integers(ties + 1))
    with np.errstate(invalid="ignore", over="ignore"):  # inf draws of a fit that failed
        moments = {
            "posterior_mean": float(draws.mean()),
            "posterior_var": float(draws.var(ddof=1)),
            "posterior_iqr": interquartile_range(draws),
        }
    return {
        "kind": kind,
        "quantity": name,
        "rank": below,
        "max_rank": draws.size,
        "true_value": value,
        **moments,
    }


def interquartile_range(values: np.ndarray) -> float:
    """The distance between the 25% and 75% quantiles."""
    lower, upper = np.quantile(values, [0.25, 0.75])
    return float(upper - lower)


# --- the run ----------------------------------------------------------------------------------

_TOOLS: dict[str, tuple[PriorGenerator, SbcAnalysis]] = {}


def tools_for(config: SbcConfig) -> tuple[PriorGenerator, SbcAnalysis]:
    """The compiled generator and refit of a configuration, once per process."""
    key = config.digest()
    if key not in _TOOLS:
        _TOOLS.clear()
        generator = PriorGenerator(config)
        _TOOLS[key] = (generator, SbcAnalysis(config, generator))
    return _TOOLS[key]


def run_chunk(config: SbcConfig, out: str, chunk: int) -> int:
    """Generate and analyse one chunk of replicates; store its rows. Returns replicates done."""
    generator, analysis = tools_for(config)
    indices = list(range(chunk * config.chunk, min((chunk + 1) * config.chunk, config.draws)))
    seeds = [replicate_seeds(config, i) for i in indices]
    drawn = [generator.draw(data_seed) for data_seed, _ in seeds]
    rows = analysis.analyse(
        [cohort for _, cohort in drawn],
        [truth for truth, _ in drawn],
        [fit_seed for _, fit_seed in seeds],
        indices,
    )
    rows["seed_data"] = rows["replicate"].map(
        dict(zip(indices, [s[0] for s in seeds], strict=True))
    )
    rows["seed_fit"] = rows["replicate"].map(dict(zip(indices, [s[1] for s in seeds], strict=True)))
    path = chunk_path(out, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    rows.to_parquet(temporary, index=False)
    temporary.replace(path)
    return len(indices)


def chunk_path(out: str | Path, chunk: int) -> Path:
    return Path(out) / "records" / f"chunk-{chunk:05d}.parquet"


def example_cohort(config: SbcConfig) -> str:
    """The first replicate's cohort as CSV text (written beside the results)."""
    generator, _ = tools_for(config)
    return cohort_csv_text(generator.draw(replicate_seeds(config, 0)[0])[1])


#: What an SBC folder holds: deleted together when stale results are replaced.
SBC_ENTRIES = (
    "manifest.json",
    "records",
    "ranks.parquet",
    "sbc_summary.csv",
    "fits.csv",
    "sbc_ecdf.png",
)


def stale_reasons(stored: dict, config: SbcConfig) -> list[str]:
    """What differs between a stored SBC run and ``config`` with today's code, in words."""
    reasons = []
    if stored.get("digest") != config.digest():
        reasons.append(
            f"another configuration (model {stored.get('config', {}).get('model')!r}, prior "
            "set, seed or sampler settings)"
        )
    if stored.get("config", {}).get("chunk") != config.chunk:
        reasons.append("another chunk size (the stored files hold other replicates)")
    if stored.get("inputs", {}).get("code") != code_digest():
        reasons.append("the model and simulation code (package version or source files) changed")
    return reasons


def open_store(config: SbcConfig, out: Path, *, replace_stale: bool = False) -> list[str]:
    """Create the output folder or check that it holds this configuration's results, made
    by this code. With ``replace_stale``, a folder of other inputs is emptied and started
    afresh. Returns what had changed (empty when the folder is new or current).

    Raises
    ------
    ValueError
        If ``out`` holds results of another model, prior, setting or code, and
        ``replace_stale`` is false.
    """
    path = out / "manifest.json"
    reasons = []
    if path.exists():
        reasons = stale_reasons(json.loads(path.read_text(encoding="utf-8")), config)
        if not reasons:
            return []
        if not replace_stale:
            raise ValueError(
                f"{out} holds SBC results of {'; '.join(reasons)}; choose another --out folder "
                "(or remove this one, or --replace-stale)"
            )
        remove_entries(out, SBC_ENTRIES)
    versions = {name: metadata.version(name) for name in ("pymc", "jax", "blackjax", "numpy")}
    manifest = {
        "config": json.loads(json.dumps(asdict(config), default=str)),
        "digest": config.digest(),
        "inputs": {"code": code_digest()},
        "python": platform.python_version(),
        "versions": versions,
        "note": "simulation-based calibration: every cohort is simulated from the model's prior",
    }
    write_atomically(json.dumps(manifest, indent=2, sort_keys=True) + "\n", path)
    return reasons


def run_sbc(
    config: SbcConfig,
    out: Path | str,
    *,
    workers: int = 1,
    progress: bool = True,
    replace_stale: bool = False,
) -> pd.DataFrame:
    """Run (or resume) SBC and return every stored row (``replace_stale``: see
    ``open_store``)."""
    out = Path(out).absolute()  # a pool's workers keep the working folder they started in
    open_store(config, out, replace_stale=replace_stale)
    chunks = -(-config.draws // config.chunk)
    pending = [c for c in range(chunks) if not chunk_path(out, c).exists()]
    with tqdm(total=len(pending) * config.chunk, unit="fit", disable=not progress) as bar:
        for done in execute(config, str(out), pending, workers=workers):
            bar.update(done)
    files = sorted((out / "records").glob("chunk-*.parquet"))
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return rows[rows["replicate"] < config.draws].reset_index(drop=True)


def execute(config: SbcConfig, out: str, chunks: list[int], *, workers: int) -> Iterator[int]:
    if workers <= 1:
        for chunk in chunks:
            yield run_chunk(config, out, chunk)
        return
    yield from run_in_workers(run_chunk, [(config, out, chunk) for chunk in chunks], workers)
