"""R-hat and ESS of many quantities at once: ArviZ's algorithms, compiled.

The gate of a batched fit needs the rank-normalised split R-hat and the bulk and tail ESS of
every posterior quantity of every dataset (Vehtari, Gelman, Simpson, Carpenter & Buerkner
2021). ArviZ (``arviz_stats``) computes them one quantity at a time in Python: about 200 ms per
trial of 16 patients, more than the sampling. These functions run the same algorithms
(split chains, average ranks with Blom's offset, the folded draws, the tail quantiles, Geyer's
initial monotone sequence) compiled with numba, one quantity after another; the tests check
that they return ArviZ's numbers. The autocovariances are summed lag by lag up to where
Geyer's sequence stops instead of by FFT over every lag: the same values up to rounding.
Input arrays are ``(quantity, chain, draw)``.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from scipy.special import ndtri

#: The two tail quantiles of the tail ESS (ArviZ's default ``prob=(0.05, 0.95)``).
TAIL_PROBS = (0.05, 0.95)


def gate_statistics(
    draws: np.ndarray, same_ranks_as: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat, bulk ESS and tail ESS per quantity.

    Parameters
    ----------
    draws
        Array ``(quantity, chain, draw)`` with at least 2 chains and 4 draws.
    same_ranks_as
        Per quantity, the index of a quantity of which it is a strictly increasing function
        (its own index if none; ``models.jax_graph.rank_sources``). Such a quantity has the
        same ranks, so its bulk R-hat, bulk and tail ESS are taken from that one; only the
        folded half of its R-hat (the ranks of ``|x - median|``, which a non-linear function
        changes) is computed from its own draws. Default: every quantity its own.

    Returns
    -------
    tuple of numpy.ndarray
        R-hat, bulk ESS and tail ESS, one value per quantity (NaN where a draw is NaN).
    """
    values = np.ascontiguousarray(draws, dtype=np.float64)
    quantities, chains, n_draws = values.shape
    if chains < 2 or n_draws < 4:
        raise ValueError("R-hat and ESS need at least 2 chains of 4 draws")
    own = np.arange(quantities)
    sources = own if same_ranks_as is None else np.asarray(same_ranks_as, dtype=np.int64)
    if sources.shape != own.shape or np.any(sources[sources] != sources):
        raise ValueError("same_ranks_as must name, per quantity, one that is its own source")
    half = n_draws // 2
    if n_draws % 2:  # the middle draw of each chain is in neither half
        split = np.concatenate([values[:, :, :half], values[:, :, n_draws - half :]], axis=1)
    else:  # each chain's two halves, in place (the order of the split chains does not matter)
        split = values.reshape(quantities, 2 * chains, half)
    pooled = split.reshape(quantities, -1)
    # numpy sorts several times faster than numba; the rest runs compiled, one quantity at a
    # time, so that its working arrays stay in the cache. A quantity with a source shares its
    # source's sort order (checked in _statistics).
    order = np.empty(pooled.shape, dtype=np.int64)
    for q in np.flatnonzero(sources == own):
        order[q] = np.argsort(pooled[q])
    out = _statistics(split, order, score_table(pooled.shape[1]), values, sources)
    return np.maximum(out[:, 0], out[:, 1]), out[:, 2], out[:, 3]


@functools.lru_cache(maxsize=32)
def score_table(n: int) -> np.ndarray:
    """Normal scores ``ndtri((r - 3/8) / (n + 1/4))`` indexed by twice the rank ``r`` (the
    average rank of tied values is a half-integer)."""
    return ndtri((np.arange(2 * n + 2) / 2 - 3 / 8) / (n + 1 / 4))


@numba.njit(cache=True, error_model="numpy")
def _statistics(split, order, table, values, sources):  # pragma: no cover - compiled
    """Columns: bulk R-hat, folded R-hat, bulk ESS, tail ESS. Quantities that are their own
    source first, then the others (their folded R-hat only; the rest is the source's)."""
    quantities, chains, half = split.shape
    n = chains * half
    out = np.empty((quantities, 4))
    ordered = np.empty(n)
    bulk = np.empty(n)
    folded = np.empty(n)
    merged = np.empty(n, dtype=np.int64)
    distance = np.empty(n)
    indicator = np.empty((chains, half))
    for shared in (False, True):
        for q in range(quantities):
            if (sources[q] != q) != shared:
                continue
            pooled = split[q].reshape(n)
            rank_order = order[sources[q]]
            for k in range(n):
                ordered[k] = pooled[rank_order[k]]
            odd_middle = values[q, :, half : values.shape[2] - half]  # dropped by the split
            if _has_nan(ordered) or _has_nan(odd_middle.ravel()):
                out[q, :] = np.nan
                continue
            if shared:
                if np.any(ordered[1:] < ordered[:-1]):  # rounding broke the shared order
                    rank_order = np.argsort(pooled, kind="mergesort")
                    ordered[:] = pooled[rank_order]
                _folded_scores(rank_order, ordered, table, folded, merged, distance)
                out[q, 0] = out[sources[q], 0]
                out[q, 1] = _plain_rhat(folded.reshape(chains, half))
                out[q, 2:] = out[sources[q], 2:]
                continue
            _scores(rank_order, ordered, table, bulk)
            _folded_scores(rank_order, ordered, table, folded, merged, distance)
            bulk_chains = bulk.reshape(chains, half)
            out[q, 0] = _plain_rhat(bulk_chains)
            out[q, 1] = _plain_rhat(folded.reshape(chains, half))
            out[q, 2] = _ess(bulk_chains)
            # The tail quantiles are taken over every draw, the middle one of odd chains too.
            tails = ordered if values.shape[2] % 2 == 0 else np.sort(values[q].ravel())
            below = indicator.reshape(n)
            tail_ess = np.inf
            for prob in TAIL_PROBS:
                cut = _sorted_quantile(tails, prob)
                for k in range(n):
                    below[k] = 1.0 if pooled[k] <= cut else 0.0
                tail_ess = min(tail_ess, _ess(indicator))
            out[q, 3] = tail_ess
    return out


@numba.njit(cache=True, error_model="numpy")
def _has_nan(values):  # pragma: no cover - compiled
    for value in values:  # noqa: SIM110 - numba compiles no generator inside any()
        if np.isnan(value):
            return True
    return False


@numba.njit(cache=True, error_model="numpy")
def _scores(order, ordered, table, scores):  # pragma: no cover - compiled
    """Normal scores of the average ranks of one quantity's pooled draws."""
    n = order.size
    start = 0
    while start < n:
        end = start
        while end + 1 < n and ordered[end + 1] == ordered[start]:
            end += 1
        score = table[start + end + 2]  # twice the 1-based average rank of the ties
        for k in range(start, end + 1):
            scores[order[k]] = score
        start = end + 1


@numba.njit(cache=True, error_model="numpy")
def _folded_scores(order, ordered, table, scores, merged, folded):  # pragma: no cover
    """Scores of ``|x - median(x)|``: the fold of sorted values is two sorted runs (from the
    median up and from it down), merged here instead of sorted again."""
    n = order.size
    median = _sorted_median(ordered)
    up = np.searchsorted(ordered, median)
    down = up - 1
    for k in range(n):  # without branches: which run comes next is unpredictable
        above = ordered[min(up, n - 1)] - median if up < n else np.inf
        below = median - ordered[max(down, 0)] if down >= 0 else np.inf
        take_up = above <= below
        merged[k] = up if take_up else down
        folded[k] = min(above, below)
        up += take_up
        down -= 1 - take_up
    start = 0
    while start < n:
        end = start
        while end + 1 < n and folded[end + 1] == folded[start]:
            end += 1
        score = table[start + end + 2]
        for k in range(start, end + 1):
            scores[order[merged[k]]] = score
        start = end + 1


@numba.njit(cache=True, error_model="numpy")
def _sorted_median(ordered):  # pragma: no cover - compiled
    """``numpy.median``'s value, to the last bit (the mean of the two middle values): folded
    distances that tie under it must tie here too."""
    n = ordered.size
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


@numba.njit(cache=True, error_model="numpy")
def _sorted_quantile(ordered, prob):  # pragma: no cover - compiled
    position = prob * (ordered.size - 1)
    low = int(np.floor(position))
    high = min(low + 1, ordered.size - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@numba.njit(cache=True, error_model="numpy")
def _plain_rhat(chains):  # pragma: no cover - compiled
    m, n = chains.shape
    means = np.empty(m)
    variances = np.empty(m)
    for c in range(m):
        means[c] = chains[c].mean()
        variances[c] = ((chains[c] - means[c]) ** 2).sum() / (n - 1)
    grand = means.mean()
    between = n * ((means - grand) ** 2).sum() / (m - 1)
    within = variances.mean()
    return np.sqrt((between / within + n - 1) / n)


@numba.njit(cache=True, error_model="numpy")
def _ess(chains):  # pragma: no cover - compiled
    m, n = chains.shape
    size = m * n
    if chains.max() - chains.min() < 1e-15:  # numpy's float resolution, as ArviZ
        return float(size)
    means = np.empty(m)
    for c in range(m):
        means[c] = chains[c].mean()
    acov0 = 0.0
    for c in range(m):
        acov0 += _lag_sum(chains[c], means[c], 0) / n
    mean_var = acov0 / m * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        grand = means.mean()
        var_plus += ((means - grand) ** 2).sum() / (m - 1)
    rho = np.zeros(n)
    rho[0] = 1.0
    even = 1.0
    odd = _rho(chains, means, 1, mean_var, var_plus)
    rho[1] = odd
    t = 1
    while t < n - 3 and even + odd > 0.0:
        even = _rho(chains, means, t + 1, mean_var, var_plus)
        odd = _rho(chains, means, t + 2, mean_var, var_plus)
        if even + odd >= 0:
            rho[t + 1] = even
            rho[t + 2] = odd
        t += 2
    max_t = t - 2
    if even > 0:
        rho[max_t + 1] = even
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
            rho[t + 2] = rho[t + 1]
        t += 2
    tau = -1.0 + 2.0 * rho[: max_t + 1].sum() + rho[max_t + 1 : max_t + 2].sum()
    tau = max(tau, 1 / np.log10(size))
    if np.isnan(rho).any():
        return np.nan
    return size / tau


@numba.njit(cache=True, error_model="numpy")
def _rho(chains, means, lag, mean_var, var_plus):  # pragma: no cover - compiled
    m, n = chains.shape
    total = 0.0
    for c in range(m):
        total += _lag_sum(chains[c], means[c], lag) / n
    return 1.0 - (mean_var - total / m) / var_plus


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _lag_sum(chain, mean, lag):  # pragma: no cover - compiled
    """Sum of (x_i - mean)(x_{i+lag} - mean): reassociated so that it vectorises."""
    acc = 0.0
    for i in range(chain.size - lag):
        acc += (chain[i] - mean) * (chain[i + lag] - mean)
    return acc
