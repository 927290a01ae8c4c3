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
    # When simulating, every row whose gate size is known gets simulated counts.
    has_counts = (rows["has_counts"] if observed else rows["n_cells"].notna()).to_numpy()
    has_pct = (
        (rows[PCT_COLUMN].notna() & ~rows["has_counts"]).to_numpy()
        if observed
        else (np.zeros(len(rows), dtype=bool))
    )
    labels = np.array([f"{r.subject_id}:{r.subset}" for r in rows.itertuples()])
    model = pm.modelcontext(None)
    if has_counts.any():
        count_rows = np.flatnonzero(has_counts)
        model.add_coord("count_row", labels[count_rows])
        n_cells = pm.Data(
            "n_cells", rows["n_cells"].to_numpy()[count_rows].astype("int64"), dims="count_row"
        )
        counts = None
        if observed:  # data, not a constant: a compiled model can be refitted to new counts
            counts = pm.Data(
                "observed_n_cd49d_pos",
                rows["n_cd49d_pos"].to_numpy()[count_rows].astype("int64"),
                dims="count_row",
            )
        pm.Binomial("n_cd49d_pos", n=n_cells, p=rate[count_rows], observed=counts, dims="count_row")
    if has_pct.any():
        pct_rows = np.flatnonzero(has_pct)
        model.add_coord("pct_row", labels[pct_rows])
        pct = np.clip(rows[PCT_COLUMN].to_numpy()[pct_rows], PCT_CLIP, 100 - PCT_CLIP)
        sd = pm.HalfNormal("pct_logit_sd", PCT_LOGIT_SD_PRIOR)
        pm.Normal(
            "logit_pct",
            mu=pt.logit(rate[pct_rows]),
            sigma=sd,
            observed=logit(pct / 100) if observed else None,
            dims="pct_row",
        )
