"""PSIS-LOO comparison of fits on the CD49d counts (the likelihood term all models share)."""

from __future__ import annotations

from pathlib import Path

import arviz as az
import pandas as pd
import xarray as xr

LOO_VARIABLE = "n_cd49d_pos"


def compare_fits(paths: list[Path]) -> pd.DataFrame:
    """ArviZ's LOO comparison of the fits at ``paths``, named by their ``model`` attribute.

    Returns
    -------
    pandas.DataFrame
        One row per model: rank, elpd_loo, p_loo, elpd_diff, dse, weight, and the number of
        observations with Pareto k above 0.7 (where PSIS-LOO is unreliable).
    """
    fits = {}
    for path in paths:
        idata = xr.open_datatree(path)
        name = str(idata.attrs.get("model", path.parent.name))
        fits[name if name not in fits else f"{name} ({path})"] = idata
    table = az.compare(fits, var_name=LOO_VARIABLE)
    table = pd.DataFrame(table).rename_axis("model").reset_index()
    pareto = {
        name: int((az.loo(idata, var_name=LOO_VARIABLE, pointwise=True).pareto_k > 0.7).sum())
        for name, idata in fits.items()
    }
    table["n_pareto_k_above_0.7"] = table["model"].map(pareto)
    return table
