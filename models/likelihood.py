"""The observation model shared by every builder: how a subject x subset rate meets the data.

Rows with counts: ``n_cd49d_pos ~ Binomial(n_cells, p)``. Rows with only a percentage:
``logit(pct / 100) ~ Normal(logit(p), pct_logit_sd)``; percentages of exactly 0 or 100 are moved
to ``PCT_CLIP`` from the edge (a logit needs an open interval). Rows with neither (only built in
code, e.g. the held-out subjects of a cross-validation fold; files must have one) add nothing:
their subjects' effects are then drawn from the population distribution.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy.special import logit

from models.data import Cohort
from models.schema import PCT_COLUMN

#: Percentages are clipped to [PCT_CLIP, 100 - PCT_CLIP] before the logit.
PCT_CLIP = 0.05
#: HalfNormal scale of the logit-normal SD: a percentage reported without counts deviates from
#: the subject's true rate by up to about 2 logits (assumption; weakly informative).
PCT_LOGIT_SD_PRIOR = 1.0


def count_data(cohort: Cohort, *, observed: bool):
    """The rows with counts and their ``n_cells`` and observed counts as ``pm.Data``.

    Made once per model (the first call creates them, later calls return the same variables):
    the likelihood and the visit effect's centring weights (``models.effects``) read the same
    data. ``counts`` is None when the model simulates (``observed`` False).
    """
    rows = cohort.rows
    # When simulating, every row whose gate size is known gets simulated counts.
    has_counts = (rows["has_counts"] if observed else rows["n_cells"].notna()).to_numpy()
    count_rows = np.flatnonzero(has_counts)
    model = pm.modelcontext(None)
    if not len(count_rows):
        return count_rows, None, None
    if "n_cells" not in model.named_vars:
        model.add_coord("count_row", row_labels(cohort)[count_rows])
        pm.Data("n_cells", rows["n_cells"].to_numpy()[count_rows].astype("int64"), dims="count_row")
        if observed:  # data, not a constant: a compiled model can be refitted to new counts
            pm.Data(
                "observed_n_cd49d_pos",
                rows["n_cd49d_pos"].to_numpy()[count_rows].astype("int64"),
                dims="count_row",
            )
    counts = model["observed_n_cd49d_pos"] if observed else None
    return count_rows, model["n_cells"], counts


def row_labels(cohort: Cohort) -> np.ndarray:
    return np.array([f"{r.subject_id}:{r.subset}" for r in cohort.rows.itertuples()])


def empirical_link(cohort: Cohort, link: str, *, observed: bool):
    """Each sample x subset's empirical rate on the link scale and its binomial variance
    (subject, subset), from the observed counts; None when the model simulates.

    ``(x + 0.5) / (n + 1)`` keeps rates of 0 and 1 finite; the variance is the delta method's
    (logit: ``1/(x + 0.5) + 1/(n - x + 0.5)``; probit: ``p(1 - p) / ((n + 1) phi(z)^2)``, with
    the same corrected ``p``). Elements without counts get value 0 and variance 1 (the data pin
    them down loosely at best).

    Raises
    ------
    ValueError
        If ``link`` is neither ``"logit"`` nor ``"probit"``.
    """
    if link not in ("logit", "probit"):
        raise ValueError(f"link must be 'logit' or 'probit', got {link!r}")
    if not observed:
        return None
    count_rows, n_cells, counts = count_data(cohort, observed=True)
    if counts is None:
        return None
    index = cohort.index_arrays()
    shape = (len(cohort.subjects), len(cohort.spec.subsets))
    where = (index["row_subject"][count_rows], index["row_subset"][count_rows])
    n, x = pt.cast(n_cells, "float64"), pt.cast(counts, "float64")
    rate = (x + 0.5) / (n + 1.0)
    if link == "logit":
        value, variance = pt.log(x + 0.5) - pt.log(n - x + 0.5), 1 / (x + 0.5) + 1 / (n - x + 0.5)
    else:
        value = np.sqrt(2.0) * pt.erfinv(2 * rate - 1)
        density = pt.exp(-0.5 * value**2) / np.sqrt(2 * np.pi)
        variance = rate * (1 - rate) / ((n + 1.0) * density**2)
    values = pt.set_subtensor(pt.zeros(shape)[where], value)
    variances = pt.set_subtensor(pt.ones(shape)[where], variance)
    return values, variances


def add_rate_likelihood(cohort: Cohort, rate_subject: pt.TensorVariable, *, observed: bool) -> None:
    """Add the count and percentage likelihoods for a (subject, subset) matrix of rates.

    Parameters
    ----------
    cohort
        The cohort; its rows decide which rows are counts and which percentages.
    rate_subject
        Positive rates with shape (subject, subset), in the model's coordinate order.
    observed
        If False the outcomes are left free, for simulation.
    """
    rows = cohort.rows
    index = cohort.index_arrays()
    rate = rate_subject[index["row_subject"], index["row_subset"]]
    has_pct = (
        (rows[PCT_COLUMN].notna() & ~rows["has_counts"]).to_numpy()
        if observed
        else (np.zeros(len(rows), dtype=bool))
    )
    labels = row_labels(cohort)
    count_rows, n_cells, counts = count_data(cohort, observed=observed)
    if len(count_rows):
        pm.Binomial("n_cd49d_pos", n=n_cells, p=rate[count_rows], observed=counts, dims="count_row")
    if has_pct.any():
        pct_rows = np.flatnonzero(has_pct)
        model = pm.modelcontext(None)
        model.add_coord("pct_row", labels[pct_rows])
        pct = np.clip(rows[PCT_COLUMN].to_numpy()[pct_rows], PCT_CLIP, 100 - PCT_CLIP)
        sd = pm.HalfNormal("pct_logit_sd", PCT_LOGIT_SD_PRIOR)
        pm.Normal(
            "logit_pct",
            mu=pm.math.logit(rate[pct_rows]),
            sigma=sd,
            observed=logit(pct / 100) if observed else None,
            dims="pct_row",
        )
