"""Derive the logit-normal occupancy priors and the mean-shift prior of ``models.priors``.

The latent-expression models used to give each patient's occupancy a scaled Beta with a
hierarchical mean (Beta(6.75, 3.25): the mean 0.874 of Foley 2019, A3) and concentration
(LogNormal(log 10, 0.5)). That centred hierarchy mixed badly where the data say little about
each patient's occupancy (R-hat 1.03 at 4x the study size). The models now draw a patient's
occupancy as 0.6 + 0.4 logistic(mu + omega z), z ~ N(0, 1) (non-centred). This script chooses
the priors of mu and omega so that the population mean occupancy and the between-patient SD have
the same 2.5%, 50% and 97.5% prior quantiles as under the Beta hierarchy, and the prior of the
mean probit shift as the log-normal that matches the shift implied by the former
sigma ~ LogNormal(log 1.5, 0.5) with kappa ~ Beta(7, 3) and that occupancy prior, and the
partial-pooling prior of one kappa per subset so that each kappa has Beta(7, 3)'s quantiles.

    .venv/bin/python scripts/calibrate_saturation_priors.py
"""

import numpy as np
from scipy import optimize, stats
from scipy.special import expit

FLOOR, SPAN = 0.6, 0.4
PROBS = np.array([0.025, 0.5, 0.975])
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def beta_reference(rng, n):
    mean = rng.beta(6.75, 3.25, n)
    concentration = np.exp(rng.normal(np.log(10.0), 0.5, n))
    sd = np.sqrt(mean * (1 - mean) / (concentration + 1))
    return FLOOR + SPAN * mean, SPAN * sd


def logit_normal(params, normal):
    m0, s0, log_median, log_sd = params
    mu = m0 + s0 * normal[:, 0]
    omega = np.exp(np.log(log_median) + log_sd * normal[:, 1])
    unit = expit(mu[:, None] + omega[:, None] * NODES)
    mean = (unit * WEIGHTS).sum(axis=1)
    sd = np.sqrt(((unit - mean[:, None]) ** 2 * WEIGHTS).sum(axis=1))
    return FLOOR + SPAN * mean, SPAN * sd


def main():
    rng = np.random.default_rng(20261125)
    n = 200_000
    ref_mean, ref_sd = beta_reference(rng, n)
    target = np.concatenate([np.quantile(ref_mean, PROBS), np.quantile(ref_sd, PROBS)])
    normal = rng.normal(size=(n, 2))

    def loss(params):
        if params[1] <= 0 or params[2] <= 0 or params[3] <= 0:
            return 1e6
        mean, sd = logit_normal(params, normal)
        got = np.concatenate([np.quantile(mean, PROBS), np.quantile(sd, PROBS)])
        return float(np.sum((got - target) ** 2))

    fit = optimize.minimize(loss, [0.8, 0.7, 0.65, 0.5], method="Nelder-Mead", tol=1e-10)
    m0, s0, median, log_sd = (round(float(v), 2) for v in fit.x)
    mean, sd = logit_normal((m0, s0, median, log_sd), normal)
    print(
        "Beta hierarchy: population mean occupancy",
        np.round(target[:3], 3),
        "SD",
        np.round(target[3:], 3),
    )
    print(f"logit-normal: mu ~ Normal({m0}, {s0}), omega ~ LogNormal(log {median}, {log_sd})")
    print(
        "  population mean occupancy",
        np.round(np.quantile(mean, PROBS), 3),
        "SD",
        np.round(np.quantile(sd, PROBS), 3),
    )

    kappa = rng.beta(7.0, 3.0, n)
    sigma = np.exp(rng.normal(np.log(1.5), 0.5, n))
    mu = m0 + s0 * normal[:, 0]
    omega = np.exp(np.log(median) + log_sd * normal[:, 1])
    occupancy = FLOOR + SPAN * expit(mu[:, None] + omega[:, None] * NODES)
    shift = -(np.log1p(-kappa[:, None] * occupancy) * WEIGHTS).sum(axis=1) / sigma
    log_shift = np.log(shift)
    print(
        f"mean probit shift ~ LogNormal({log_shift.mean():.2f}, {log_shift.std():.2f});",
        "quantiles",
        np.round(np.quantile(shift, PROBS), 3),
    )
    per_subset_kappa(rng, n)


def per_subset_kappa(rng, n):
    """logit kappa_s = mu + omega z_s with omega ~ HalfNormal(0.5): mu's prior matched to the
    quantiles of Beta(7, 3), the shared kappa's prior."""
    normal = rng.normal(size=(n, 4))
    omega = np.abs(normal[:, 1]) * 0.5
    target = stats.beta(7, 3).ppf(PROBS)

    def kappas(params, z):
        return expit(params[0] + params[1] * normal[:, 0] + omega * z)

    def loss(params):
        if params[1] <= 0:
            return 1e6
        return float(np.sum((np.quantile(kappas(params, normal[:, 2]), PROBS) - target) ** 2))

    fit = optimize.minimize(loss, [0.85, 0.6], method="Nelder-Mead")
    m, a = (round(float(v), 2) for v in fit.x)
    first, second = kappas((m, a), normal[:, 2]), kappas((m, a), normal[:, 3])
    print(
        f"kappa per subset: mu ~ Normal({m}, {a}), omega ~ HalfNormal(0.5); quantiles",
        np.round(np.quantile(first, PROBS), 3),
        "(Beta(7, 3):",
        np.round(target, 3),
        f"); SD of a difference between subsets {np.std(first - second):.3f}",
    )


if __name__ == "__main__":
    main()
