"""Many gated fits of one model at once: HMC vectorised over datasets and chains (JAX).

The power engine and simulation-based calibration refit one model to thousands of datasets of
the same shape. ``BatchSampler`` compiles the model's own graph once (``models.jax_graph``) and
runs ``batch_size`` datasets x ``chains`` chains in one XLA program (``jax.vmap``):

1. **Laplace start.** Per dataset, the posterior mode of the unconstrained parameters (L-BFGS,
   optax) and the Hessian there. Chains start at independent draws from this Gaussian; the
   diagonal inverse mass matrix is ``sqrt(var(x) / var(grad))`` under it (nutpie's estimator,
   computed from the Gaussian instead of from warmup draws).
2. **Jittered HMC** (blackjax's HMC kernel). Each transition integrates for
   ``u x trajectory_length`` (``u ~ Uniform(0.5, 1.5)``; the length is in units of the
   Laplace-whitened scale) with the step size tuned by dual averaging to ``target_accept``
   over ``tune`` warmup transitions (of at most ``tune_max_integration_steps`` leapfrog steps)
   in two windows: after the first third, the diagonal metric
   is estimated again by the same estimator from the second half of that window's draws of all
   the dataset's chains (the Laplace Gaussian misjudges the scales of skewed directions such
   as the between-subject SDs). Every chain of a batch integrates for the same jittered time
   in each transition; its number of leapfrog steps follows from its own step size, and the
   vectorised batch runs as many as its longest chain needs (about 12% above the mean at
   n = 8; vectorised NUTS waits for the deepest tree of the batch: 3-6 times the cost here).
   Jittering the length avoids the periodicity of fixed-length HMC. With
   ``metric="dense"`` the inverse mass matrix is the Laplace covariance, its variances set
   after the first third of warmup to the same estimator's (its correlations kept): needed
   where parameters are strongly correlated, as the two group means of a paired design (each
   patient's vector is shared by both samples, so the data fix the difference of the means
   far better than the means: with the diagonal metric 16 of 16 paired trials at n = 8
   failed the gate, bulk ESS about 60; with the dense one all passed, bulk ESS about 2700).
   The variances matter where the mode misplaces the bulk, as for a small visit SD: on 16
   paired trials at n = 8 (visit SD 0.15) 15 passed the first attempt instead of 10.
3. **Longer chains, then NUTS.** A dataset that fails the gate first has its chains continued
   for ``draws`` more transitions (the gate then sees every draw of the longer chains: the
   R-hat of about a hundred quantities from 4 x 1000 draws exceeds 1.01 by chance in a few
   datasets in ten). One that still fails is fitted again from scratch with NUTS (blackjax;
   dual-averaged step size, ``max_tree_depth``) at each of ``retry_target_accepts`` in turn,
   with the dataset's next seed. One that still fails is returned as failed, never dropped.

Every posterior quantity (free variables on their natural scale, every deterministic) is then
computed per draw, and the gate (``models.diagnostics.gate``, the one every fit passes) applied
per dataset to its rank-normalised split R-hat, bulk and tail ESS (``models.chain_stats``:
ArviZ's algorithms, vectorised), divergences and E-BFMI. A deterministic that is a strictly
increasing function of another quantity, element by element (``positive_rate_subject =
invlogit(subject_logit)``, found in the graph by ``models.jax_graph.rank_sources``), has the
same ranks and so the same bulk R-hat, bulk ESS and tail ESS: they are computed once; only
its folded R-hat is computed from its own draws. The statistics stay ArviZ's, and the gate of
``positive_rate`` (48 of whose 122 quantities are such functions) costs about 13 ms per fit
at n = 8 instead of 18.

Why HMC with a fixed, jittered length for the first attempt: ``benchmarks/power_throughput.py``
measures it against vectorised NUTS on the same trials; at equal draws it gave higher bulk and
tail ESS per dataset at about a third of the cost, and the gate, SBC and the comparison with
nutpie (``tests/test_batch.py``, the benchmark) check that its posteriors are right.

Randomness: dataset ``i`` with seed ``s`` uses ``jax.random.key`` of the ``k``-th child of
``SeedSequence(s)`` in attempt ``k``; the jitter sequence is fixed. Each compiled call holds
exactly ``batch_size`` datasets (shorter batches are padded) and datasets never interact
inside it, so a dataset's draws do not depend on which others shared its batch, on the number
of batches or on the workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pymc as pm
import xarray as xr
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.mcmc.hmc import HMCState

from models.chain_stats import gate_statistics
from models.diagnostics import DiagnosticReport, Thresholds, gate
from models.jax_graph import JaxModel, compile_to_jax

#: Eigenvalues of the Hessian below this (in the unconstrained space) are treated as this: a
#: flat or concave direction at the mode must not give an infinite initial scale.
MIN_CURVATURE = 1e-3
#: First step size of dual averaging, whose long-run target starts at twice it: the Laplace
#: metric makes step sizes near 0.5 typical, and starting far above that wastes transitions.
INITIAL_STEP_SIZE = 0.5
#: The jitter of the integration time is the same fixed sequence for every dataset.
JITTER_SEED = 20261125
#: Compiled programs are kept on disk (JAX's persistent cache, keyed by the program, the JAX
#: version and the device), so a second worker process or a later run skips the compilation.
COMPILATION_CACHE = Path(
    os.environ.get("CD49D_JAX_CACHE", Path.home() / ".cache" / "cd49d" / "jax")
)
jax.config.update("jax_compilation_cache_dir", str(COMPILATION_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

#: Settings per model over the defaults (``BatchSettings``), used by the power plans and SBC.
#: ``saturation_per_subset``: with 100 L-BFGS iterations the mode was not reached on simulated
#: mechanism trials of 64 + 64 patients (about 450 parameters), the Laplace scale of the kappa
#: spread came out huge and chains started where the log density is not finite (10 of 24
#: trials failed the gate after every retry, 12.6 s per refit); with 400 iterations and target
#: acceptance 0.9 (fewer single divergences) 0 of 24 failed (1.9 s per refit), and 1 of 72 at
#: 8 + 8 and 16 + 16 patients.
MODEL_SETTINGS: dict[str, dict] = {
    "saturation_per_subset": {"laplace_iterations": 400, "target_accept": 0.9},
}

#: What an extension needs of a jittered-HMC fit: each chain's last state and step size, and
#: the dataset's metric.
CARRY = ("position", "logdensity", "logdensity_grad", "step_size", "metric")


def padded(items: list, size: int) -> list:
    """``items`` filled up to ``size`` with copies of the first (their results are dropped)."""
    return items + [items[0]] * (size - len(items))


@dataclass(frozen=True)
class BatchSettings:
    """How to sample a batch. ``tune`` warmup and ``draws`` kept transitions per chain.

    ``max_integration_steps`` (HMC) and ``max_tree_depth`` (NUTS retries) cap the leapfrog
    steps of a transition: a dataset whose posterior needs more (a funnel, say) fails the gate
    quickly instead of holding up every dataset of its batch, which wait for the longest
    trajectory. Well-behaved posteriors take about 5 steps. Warmup transitions take at most
    ``tune_max_integration_steps``: dual averaging tries small step sizes early on, and without
    the cap the batch waited for trajectories of 20-40 steps (cross-sectional n = 8: about a
    quarter of the batch's leapfrog steps went into the 150 warmup transitions; the cap at 10
    took 8% off the compiled call with the same ESS and gate, ``benchmarks/README.md``).

    ``metric``: ``diagonal`` (the Laplace estimate, estimated again after the first third of
    warmup) or ``dense`` (the Laplace covariance with its variances estimated again then, for
    posteriors with strongly correlated parameters; each leapfrog step then costs a matrix
    product).
    """

    chains: int = 4
    tune: int = 150
    draws: int = 1000
    target_accept: float = 0.8
    retry_target_accepts: tuple[float, ...] = (0.95,)
    trajectory_length: float = 2.2
    max_integration_steps: int = 64
    tune_max_integration_steps: int = 10
    max_tree_depth: int = 7
    batch_size: int = 8
    retry_batch_size: int = 2
    laplace_iterations: int = 100
    metric: Literal["diagonal", "dense"] = "diagonal"

    def __post_init__(self) -> None:
        if self.chains < 2 or self.draws < 4 or self.tune < 8:
            raise ValueError("need at least 2 chains, 4 draws and 8 tuning steps")
        if self.batch_size < 1 or self.retry_batch_size < 1:
            raise ValueError("batch_size and retry_batch_size must be at least 1")


@dataclass
class BatchFit:
    """One dataset's gated fit: draws of every posterior quantity, the gate, what was tried."""

    draws: np.ndarray  # (chain, draw, quantity), columns in ``JaxModel.layout`` order
    report: DiagnosticReport
    attempts: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    energy: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    carry: dict[str, np.ndarray] = field(default_factory=dict)  # where the chains stopped

    @property
    def passed(self) -> bool:
        return self.report.passed


class BatchSampler:
    """One model compiled once for many datasets of the same shape.

    Parameters
    ----------
    model
        A PyMC model whose ``pm.Data`` variables ``data_names`` change between datasets.
    data_names
        The data to swap (e.g. ``n_cells``, ``observed_n_cd49d_pos``).
    settings, thresholds
        Sampler settings and the gate's limits.
    """

    def __init__(
        self,
        model: pm.Model,
        data_names: tuple[str, ...],
        settings: BatchSettings | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.settings = settings or BatchSettings()
        self.thresholds = thresholds or Thresholds()
        self.jax_model = compile_to_jax(model, data_names)
        self.labels = self.jax_model.layout.column_labels()
        # An increasing function of another quantity shares its rank statistics.
        self.same_ranks_as = self.jax_model.layout.statistics_columns()
        self._programs: dict[str, object] = {}

    def program(self, method: str):
        """The compiled batch program of a method (built on first use)."""
        if method not in self._programs:
            if method == "extend":
                run = partial(extend_one, self.jax_model, self.settings)
                self._programs[method] = jax.jit(jax.vmap(run))
            else:
                fit = partial(fit_one, self.jax_model, self.settings, method)
                self._programs[method] = jax.jit(jax.vmap(fit, in_axes=(0, 0, None)))
        return self._programs[method]

    def fit(self, datasets: list[dict[str, np.ndarray]], seeds: list[int]) -> list[BatchFit]:
        """Gated fits of ``datasets`` (dicts of the data arrays), seeded per dataset."""
        if len(datasets) != len(seeds):
            raise ValueError("one seed per dataset")
        plan = [("hmc", self.settings.target_accept), ("extend", self.settings.target_accept)]
        plan += [("nuts", accept) for accept in self.settings.retry_target_accepts]
        children = [np.random.SeedSequence(seed).spawn(len(plan)) for seed in seeds]
        results: list[BatchFit | None] = [None] * len(datasets)
        pending = list(range(len(datasets)))
        for attempt, (method, accept) in enumerate(plan):
            keys = [int(children[i][attempt].generate_state(1)[0]) for i in pending]
            previous = [results[i] for i in pending]
            fits = self.fit_attempt([datasets[i] for i in pending], keys, method, accept, previous)
            for index, result, before in zip(pending, fits, previous, strict=True):
                label = "extend" if method == "extend" else f"{method}@{accept:g}"
                result.attempts = [*(before.attempts if before else []), label]
                results[index] = result
            pending = [i for i in pending if not results[i].passed]
            if not pending:
                break
        return results  # type: ignore[return-value]

    def fit_attempt(
        self,
        datasets: list[dict],
        seeds: list[int],
        method: str,
        accept: float,
        previous: list[BatchFit | None] | None = None,
    ) -> list[BatchFit]:
        """One attempt for each dataset, in padded batches of ``batch_size``.

        ``method`` is ``hmc``, ``nuts`` or ``extend`` (continue ``previous`` fits' chains).
        Retries run in batches of ``retry_batch_size``: the few datasets that need one do not
        pay for a full batch. Each method always runs at its own width, so that a dataset's
        draws do not depend on how many others shared its call (a vectorised program of
        another width rounds differently, and the chains then diverge).
        """
        size = self.settings.batch_size if method == "hmc" else self.settings.retry_batch_size
        fits = []
        for start in range(0, len(datasets), size):
            chunk = padded(datasets[start : start + size], size)
            chunk_seeds = padded(seeds[start : start + size], size)
            real = min(size, len(datasets) - start)
            data = tuple(
                jnp.asarray(np.stack([d[name] for d in chunk]))
                for name in self.jax_model.data_names
            )
            keys = jax.vmap(jax.random.key)(jnp.asarray(chunk_seeds, dtype=jnp.uint32))
            if method == "extend":
                before = padded((previous or [])[start : start + size], size)
                carry = {k: jnp.asarray(np.stack([b.carry[k] for b in before])) for k in CARRY}
                out = jax.device_get(self.program(method)(data, keys, carry))
                fits += [self.batch_fit(out, i, before[i]) for i in range(real)]
            else:
                out = jax.device_get(self.program(method)(data, keys, accept))
                fits += [self.batch_fit(out, i) for i in range(real)]
        return fits

    def batch_fit(self, out: dict, i: int, before: BatchFit | None = None) -> BatchFit:
        quantities = np.asarray(out["draws"][i])  # (quantity, chain, draw), contiguous
        energy = np.asarray(out["energy"][i])
        divergences = int(out["divergences"][i].sum())
        if before is not None:  # an extension: the gate sees the whole, longer chains
            quantities = np.concatenate([np.moveaxis(before.draws, -1, 0), quantities], axis=2)
            energy = np.concatenate([before.energy, energy], axis=1)
            divergences += int(before.stats["divergences"])
        rhat, ess_bulk, ess_tail = gate_statistics(quantities, self.same_ranks_as)
        first = quantities[:, 0, 0]
        tolerance = 1e-12 * (1 + np.abs(first))
        # inf draws, huge energies or a stuck chain give NaN, which fails the gate
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            constant = (quantities.max(axis=(1, 2)) - first <= tolerance) & (
                first - quantities.min(axis=(1, 2)) <= tolerance
            )
            ebfmi = np.mean(np.diff(energy, axis=1) ** 2, axis=1) / np.var(energy, axis=1)
        draws = np.moveaxis(quantities, 0, -1)  # (chain, draw, quantity), a view
        report = gate(
            self.labels,
            rhat=rhat,
            ess_bulk=ess_bulk,
            ess_tail=ess_tail,
            constant=constant,
            divergences=divergences,
            ebfmi=ebfmi,
            thresholds=self.thresholds,
        )
        stats = {
            "divergences": divergences,
            "leapfrog_steps": float(out["steps"][i].mean()),
            "step_size": float(out["step_size"][i].mean()),
            "max_depth_share": float(out["max_depth"][i].mean()),
        }
        carry = {k: np.asarray(out[k][i]) for k in CARRY} if "position" in out else {}
        return BatchFit(draws=draws, report=report, stats=stats, energy=energy, carry=carry)

    def posterior(self, fit: BatchFit, var_names: list[str] | None = None) -> xr.Dataset:
        """The draws as an xarray posterior with the model's dims and coordinates (only
        ``var_names`` if given)."""
        return posterior_dataset(self.jax_model, fit.draws, var_names)

    def stacked_posterior(self, fits: list[BatchFit], var_names: list[str]) -> xr.Dataset:
        """``var_names`` of several fits with the same number of draws, along a leading
        ``dataset`` dimension."""
        return posterior_dataset(self.jax_model, [fit.draws for fit in fits], var_names)


def posterior_dataset(
    jax_model: JaxModel, draws: np.ndarray | list[np.ndarray], var_names: list[str] | None = None
) -> xr.Dataset:
    """Split (chain, draw, quantity) draws into named variables with dims and coordinates; a
    list of such arrays (of one shape) is stacked along a leading ``dataset`` dimension."""
    layout = jax_model.layout
    stacked = isinstance(draws, list)
    chains, n_draws, _ = (draws[0] if stacked else draws).shape
    lead = ("dataset", "chain", "draw") if stacked else ("chain", "draw")
    variables, start = {}, 0
    for name, shape, size in zip(layout.names, layout.shapes, layout.sizes, strict=True):
        if var_names is None or name in var_names:
            columns = slice(start, start + size)
            values = np.stack([d[..., columns] for d in draws]) if stacked else draws[..., columns]
            dims = layout.dims.get(name) or tuple(f"{name}_dim_{k}" for k in range(len(shape)))
            variables[name] = ((*lead, *dims), values.reshape(*values.shape[:-1], *shape))
        start += size
    used = {d for dims, _ in variables.values() for d in dims}
    coords = {d: layout.coords[d] for d in used if d in layout.coords}
    coords |= {"chain": np.arange(chains), "draw": np.arange(n_draws)}
    return xr.Dataset(variables, coords=coords)


# --- the compiled program (pure JAX) ------------------------------------------------------


def fit_one(jax_model: JaxModel, settings: BatchSettings, method: str, data, key, accept):
    """Laplace start, warmup and draws of every chain of one dataset."""

    def logdensity(position):
        return jax_model.logdensity(position, data)

    start_key, warm_key, chain_key = jax.random.split(key, 3)
    mode, scale_root, metric = laplace(logdensity, jax_model.initial_position, settings)
    if settings.metric == "dense":
        metric = scale_root @ scale_root.T  # the Laplace covariance as inverse mass matrix
    starts = mode + jax.random.normal(start_key, (settings.chains, mode.size)) @ scale_root.T
    if method == "hmc":
        first = settings.tune // 3
        window = partial(hmc_window, logdensity, settings, accept, first)
        keys = jax.random.split(warm_key, settings.chains)
        states, steps, xs, grads = jax.vmap(window, in_axes=(None, 0, 0, None))(
            metric, keys, jax.vmap(lambda x: blackjax.hmc.init(x, logdensity))(starts), None
        )
        window_xs, window_grads = xs[:, first // 2 :], grads[:, first // 2 :]
        if settings.metric == "diagonal":
            metric = pooled_metric(window_xs, window_grads, metric)
        else:
            variance = pooled_metric(window_xs, window_grads, jnp.diag(metric))
            metric = rescaled_covariance(metric, variance)
        run = partial(jittered_hmc_chain, logdensity, settings, metric, accept)
        positions, stats = jax.vmap(run)(
            jax.random.split(chain_key, settings.chains), states, steps
        )
    else:
        run = partial(nuts_chain, logdensity, settings, metric, accept)
        positions, stats = jax.vmap(run)(jax.random.split(chain_key, settings.chains), starts)
    return {"draws": posterior_draws(jax_model, positions, data), "metric": metric, **stats}


def pooled_metric(xs, grads, fallback):
    """``sqrt(var(x) / var(grad))`` over the window's draws of every chain of a dataset."""
    flat_x = xs.reshape(-1, xs.shape[-1])
    flat_g = grads.reshape(-1, grads.shape[-1])
    estimate = jnp.sqrt(jnp.var(flat_x, axis=0) / jnp.var(flat_g, axis=0))
    return jnp.where(jnp.isfinite(estimate) & (estimate > 0), estimate, fallback)


def rescaled_covariance(covariance, variance):
    """The Laplace covariance with each coordinate's variance set to ``variance`` (its
    correlations kept)."""
    ratio = jnp.sqrt(variance / jnp.diag(covariance))
    ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    return covariance * ratio[:, None] * ratio[None, :]


def extend_one(jax_model: JaxModel, settings: BatchSettings, data, key, carry):
    """``draws`` more jittered-HMC transitions of every chain of one dataset, from where the
    chains stopped, with their step sizes and the dataset's metric."""

    def logdensity(position):
        return jax_model.logdensity(position, data)

    def run(chain_key, position, value, grad, step_size):
        state = HMCState(position, value, grad)
        return hmc_draws(logdensity, settings, carry["metric"], step_size, chain_key, state)

    chain_keys = jax.random.split(key, settings.chains)
    positions, stats = jax.vmap(run)(
        chain_keys,
        carry["position"],
        carry["logdensity"],
        carry["logdensity_grad"],
        carry["step_size"],
    )
    draws = posterior_draws(jax_model, positions, data)
    return {"draws": draws, "metric": carry["metric"], **stats}


def posterior_draws(jax_model: JaxModel, positions, data):
    """Every posterior quantity of every draw, as ``(quantity, chain, draw)``: the layout in
    which the gate reads each quantity's draws contiguously."""
    draws = jax.vmap(jax.vmap(lambda p: jax_model.posterior(p, data)))(positions)
    return jnp.moveaxis(draws, -1, 0)


def laplace(logdensity, start, settings: BatchSettings):
    """Mode (L-BFGS), a square root of the Laplace covariance, and the initial metric."""

    def negative(x):
        return -logdensity(x)

    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(negative)

    def step(carry, _):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = optimizer.update(grad, state, x, value=value, grad=grad, value_fn=negative)
        return (optax.apply_updates(x, updates), state), None

    start = jnp.asarray(start)
    (mode, _), _ = jax.lax.scan(
        step, (start, optimizer.init(start)), None, length=settings.laplace_iterations
    )
    usable = jnp.all(jnp.isfinite(mode)) & jnp.isfinite(negative(mode))
    mode = jnp.where(usable, mode, start)
    hessian = jax.hessian(negative)(mode)
    eigenvalues, vectors = jnp.linalg.eigh(0.5 * (hessian + hessian.T))
    eigenvalues = jnp.maximum(eigenvalues, MIN_CURVATURE)
    scale_root = vectors / jnp.sqrt(eigenvalues)  # covariance = scale_root @ scale_root.T
    position_var = jnp.sum(scale_root**2, axis=1)
    gradient_var = jnp.sum(vectors**2 * eigenvalues, axis=1)
    metric = jnp.sqrt(position_var / gradient_var)
    fine = usable & jnp.all(jnp.isfinite(metric)) & jnp.all(jnp.isfinite(scale_root))
    metric = jnp.where(fine, metric, jnp.ones_like(metric))
    scale_root = jnp.where(fine, scale_root, jnp.eye(mode.size))
    return mode, scale_root, metric


def step_size_adaptation(accept):
    """Dual averaging (Hoffman & Gelman 2014) whose target starts at twice the first step."""
    da_init, da_update, da_final = dual_averaging_adaptation(accept)

    def init(step=None):
        first = INITIAL_STEP_SIZE if step is None else step
        state = da_init(first)
        return state._replace(mu=jnp.log(2 * first))

    return init, da_update, da_final


def jitter_factors(count: int, offset: int = 0) -> jax.Array:
    """The fixed sequence of integration-time factors, Uniform(0.5, 1.5)."""
    total = jax.random.uniform(
        jax.random.key(JITTER_SEED), (offset + count,), minval=0.5, maxval=1.5
    )
    return total[offset:]


def hmc_window(logdensity, settings: BatchSettings, accept, length, metric, key, state, step):
    """``length`` jittered-HMC transitions adapting the step size (from ``step``, or the
    initial one); returns the state, the adapted step size and the positions and gradients."""
    kernel = blackjax.hmc.build_kernel()
    da_init, da_update, da_final = step_size_adaptation(accept)

    def adapt(carry, inputs):
        state, da = carry
        step_key, factor = inputs
        step_size = jnp.exp(da.log_step_size)
        steps = integration_steps(factor, settings, step_size, settings.tune_max_integration_steps)
        state, info = kernel(step_key, state, logdensity, step_size, metric, steps)
        return (state, da_update(da, info.acceptance_rate)), (state.position, state.logdensity_grad)

    inputs = (jax.random.split(key, length), jitter_factors(length))
    (state, da), (xs, grads) = jax.lax.scan(adapt, (state, da_init(step)), inputs)
    return state, da_final(da), xs, grads


def jittered_hmc_chain(logdensity, settings: BatchSettings, metric, accept, key, state, step):
    """The rest of one chain's warmup (step size re-adapted to the new metric), then draws."""
    warm_key, draw_key = jax.random.split(key)
    length = settings.tune - settings.tune // 3
    state, step_size, _, _ = hmc_window(
        logdensity, settings, accept, length, metric, warm_key, state, step
    )
    return hmc_draws(logdensity, settings, metric, step_size, draw_key, state)


def hmc_draws(logdensity, settings: BatchSettings, metric, step_size, key, state):
    """``draws`` jittered-HMC transitions at a fixed step size; draws and chain statistics."""
    kernel = blackjax.hmc.build_kernel()

    def draw(state, inputs):
        step_key, factor = inputs
        steps = integration_steps(factor, settings, step_size)
        state, info = kernel(step_key, state, logdensity, step_size, metric, steps)
        return state, (state.position, info.is_divergent, info.energy, steps)

    inputs = (
        jax.random.split(key, settings.draws),
        jitter_factors(settings.draws, offset=settings.tune),
    )
    state, (positions, divergent, energy, steps) = jax.lax.scan(draw, state, inputs)
    stats = {
        "divergences": divergent.sum(),
        "energy": energy,
        "steps": steps.mean(),
        "max_depth": (steps >= settings.max_integration_steps).mean(),
        "step_size": step_size,
        "position": state.position,
        "logdensity": state.logdensity,
        "logdensity_grad": state.logdensity_grad,
    }
    return positions, stats


def integration_steps(factor, settings: BatchSettings, step_size, cap: int | None = None):
    """Leapfrog steps for a jittered integration time, at most ``cap`` (default
    ``max_integration_steps``)."""
    steps = jnp.round(factor * settings.trajectory_length / step_size)
    return jnp.clip(steps, 1, cap or settings.max_integration_steps).astype(int)


def nuts_chain(logdensity, settings: BatchSettings, metric, accept, key, start):
    """One chain of NUTS: ``tune`` transitions adapting the step size, then draws."""
    kernel = blackjax.nuts.build_kernel()
    da_init, da_update, da_final = step_size_adaptation(accept)
    depth = settings.max_tree_depth
    warm_key, draw_key = jax.random.split(key)

    def adapt(carry, step_key):
        state, da = carry
        step_size = jnp.exp(da.log_step_size)
        state, info = kernel(
            step_key, state, logdensity, step_size, metric, max_num_doublings=depth
        )
        return (state, da_update(da, info.acceptance_rate)), None

    state = blackjax.nuts.init(start, logdensity)
    (state, da), _ = jax.lax.scan(
        adapt, (state, da_init()), jax.random.split(warm_key, settings.tune)
    )
    step_size = da_final(da)

    def draw(state, step_key):
        state, info = kernel(
            step_key, state, logdensity, step_size, metric, max_num_doublings=depth
        )
        record = (
            state.position,
            info.is_divergent,
            info.energy,
            info.num_integration_steps,
            info.num_trajectory_expansions >= depth,
        )
        return state, record

    _, (positions, divergent, energy, steps, at_depth) = jax.lax.scan(
        draw, state, jax.random.split(draw_key, settings.draws)
    )
    stats = {
        "divergences": divergent.sum(),
        "energy": energy,
        "steps": steps.mean(),
        "max_depth": at_depth.mean(),
        "step_size": step_size,
    }
    return positions, stats
