"""The one place that samples: a gated fit with priors, predictives and log-likelihood."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pymc as pm
import xarray as xr

from models.data import Cohort
from models.diagnostics import DiagnosticReport, Thresholds, check
from models.names import SAMPLERS


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample. ``retry_target_accepts`` are tried in turn after a failed gate.

    nutpie is the default for single fits (``cd49d fit``). In ``benchmarks/fit_backends.py``
    (2 cores, compilation included, 4 x 1000 draws; measured before the subject effects were
    reparameterised, ``models/effects.py``) it had the shortest wall time on the three
    mechanistic models, numpyro drew more effective samples per second, and PyMC's own NUTS
    took two to three times as long everywhere. Many fits of one model use the batched JAX
    sampler instead (``models.batch``).

    ``mass_matrix``: ``low_rank`` is nutpie's low-rank modified mass matrix
    (``adaptation="low_rank"``), for posteriors with strongly correlated parameters:
    cohorts whose samples share patients (``for_cohort``). On paired trials of 16 patients the
    diagonal one failed the gate in 3 of 3 at 4 x 1000 draws (bulk ESS 92-329, R-hat up to
    1.07 on the group means), the low-rank one passed all three (bulk ESS 1378-4414) in less
    time. It is not the default: on the saturation model at 4x the study's design it took five
    times as long as the diagonal one (``../shared/notes/geometry.md``).
    """

    sampler: str = "nutpie"
    mass_matrix: Literal["diagonal", "low_rank"] = "diagonal"
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    cores: int = 2
    target_accept: float = 0.9
    retry_target_accepts: tuple[float, ...] = (0.97,)
    progressbar: bool = False

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: choose from {', '.join(SAMPLERS)}")
        if self.mass_matrix == "low_rank" and self.sampler != "nutpie":
            raise ValueError("the low-rank mass matrix needs the nutpie sampler")

    def for_cohort(self, cohort: Cohort) -> SamplerSettings:
        """These settings, with nutpie's low-rank mass matrix where samples share patients
        (a patient's vector then ties the group means together)."""
        if cohort.shares_patients and self.sampler == "nutpie":
            return replace(self, mass_matrix="low_rank")
        return self

    def nutpie_options(self) -> dict:
        """Extra keyword arguments of ``nutpie.sample``."""
        return {"adaptation": "low_rank"} if self.mass_matrix == "low_rank" else {}


@dataclass(frozen=True)
class FitResult:
    """A gated fit: the data tree, its diagnostics, and the target acceptances tried."""

    idata: xr.DataTree
    report: DiagnosticReport
    attempts: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.report.passed


def sample_posterior(model: pm.Model, settings: SamplerSettings, *, seed: int) -> xr.DataTree:
    """Posterior draws and sample stats (one sampler call, no predictives)."""
    quiet_sampling_logs()
    options = settings.nutpie_options()
    with model:
        return pm.sample(
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=settings.cores,
            target_accept=settings.target_accept,
            nuts_sampler=settings.sampler,
            random_seed=seed,
            progressbar=settings.progressbar,
            **({"nuts": options} if options else {}),
        )


#: How the checks' functions (predictive draws, pointwise log densities) are compiled. Each runs
#: once per fit, over a few thousand draws: compiled by PyTensor's default (numba) backend they
#: took about 8 s per `cd49d fit`, with empty compile caches and with warm ones alike; with
#: ``FAST_COMPILE`` about 2 s, with the same values (log-likelihood sums equal to 1e-13).
CHECKS_COMPILE = {"mode": "FAST_COMPILE"}


def add_checks_groups(
    model: pm.Model, idata: xr.DataTree, *, seed: int, prior_draws: int = 1000
) -> xr.DataTree:
    """Add prior, prior predictive, posterior predictive and pointwise log-likelihood."""
    prior_seed, posterior_seed = np.random.SeedSequence(seed).spawn(2)
    with model:
        prior = pm.sample_prior_predictive(
            draws=prior_draws,
            random_seed=int(prior_seed.generate_state(1)[0]),
            compile_kwargs=CHECKS_COMPILE,
        )
        pm.stats.compute_log_likelihood(idata, progressbar=False, compile_kwargs=CHECKS_COMPILE)
        pm.sample_posterior_predictive(
            idata,
            extend_inferencedata=True,
            progressbar=False,
            random_seed=int(posterior_seed.generate_state(1)[0]),
            compile_kwargs=CHECKS_COMPILE,
        )
    for group in ("prior", "prior_predictive"):
        if group in prior.children:
            idata[group] = prior[group]
    return idata


def fit_gated(
    build: Callable[[], pm.Model],
    settings: SamplerSettings | None = None,
    thresholds: Thresholds | None = None,
    *,
    seed: int,
    with_checks: bool = True,
) -> FitResult:
    """Sample, gate, and on failure resample at each higher target acceptance in turn.

    Parameters
    ----------
    build
        Returns the model (called once).
    settings, thresholds
        Sampler settings and diagnostic limits; defaults if None.
    seed
        Root seed; attempt ``k`` samples with the ``k``-th child of ``SeedSequence(seed)``.
    with_checks
        Also add prior/posterior predictive and log-likelihood groups to a passing fit.

    Returns
    -------
    FitResult
        The last attempt; ``passed`` is False if every attempt failed the gate.
    """
    settings = settings or SamplerSettings()
    model = build()
    accepts = [settings.target_accept, *settings.retry_target_accepts]
    children = np.random.SeedSequence(seed).spawn(len(accepts) + 1)
    tried = []
    for accept, child in zip(accepts, children, strict=False):
        tried.append(accept)
        attempt_seed = int(child.generate_state(1)[0])
        idata = sample_posterior(model, replace(settings, target_accept=accept), seed=attempt_seed)
        report = check(idata, thresholds)
        if report.passed:
            break
    result = FitResult(idata=idata, report=report, attempts=tried)
    if with_checks and result.passed:
        add_checks_groups(model, idata, seed=int(children[-1].generate_state(1)[0]))
    return result


def quiet_sampling_logs() -> None:
    """PyMC logs every sampler start at INFO; the CLI reports progress itself."""
    logging.getLogger("pymc").setLevel(logging.WARNING)


class RefitSampler:
    """One model compiled once (nutpie), refitted to new data of the same shape many times.

    The power engine's path: compiling costs seconds, sampling a trial of the study's size a
    few; compiling per replicate would double the cost. The data to swap must be ``pm.Data``
    (``n_cells``, ``observed_n_cd49d_pos``, ``observed_exacerbation``). Each fit is gated like
    ``fit_gated``: on failure it is resampled once per ``retry_target_accepts``.
    """

    def __init__(self, model: pm.Model, settings: SamplerSettings) -> None:
        import nutpie

        self.nutpie = nutpie
        self.settings = settings
        self.compiled = nutpie.compile_pymc_model(model)

    def fit(
        self, data: dict[str, np.ndarray], *, seed: int, thresholds: Thresholds | None = None
    ) -> FitResult:
        """Sample the model on ``data`` and gate the result (see ``fit_gated``)."""
        compiled = self.compiled.with_data(**data)
        accepts = [self.settings.target_accept, *self.settings.retry_target_accepts]
        children = np.random.SeedSequence(seed).spawn(len(accepts))
        tried = []
        for accept, child in zip(accepts, children, strict=True):
            tried.append(accept)
            idata = self.nutpie.sample(
                compiled,
                draws=self.settings.draws,
                tune=self.settings.tune,
                chains=self.settings.chains,
                cores=self.settings.cores,
                target_accept=accept,
                seed=int(child.generate_state(1)[0]),
                progress_bar=False,
                **self.settings.nutpie_options(),
            )
            report = check(idata, thresholds)
            if report.passed:
                break
        return FitResult(idata=idata, report=report, attempts=tried)
