"""PSIS-LOO comparison of fits on the CD49d counts (the likelihood term all models share)."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import arviz as az
import pandas as pd
import xarray as xr

LOO_VARIABLE = "n_cd49d_pos"


#: ArviZ's warning that some Pareto k exceed 0.7: the table's ``n_pareto_k_above_0.7`` counts
#: them per model, and the command says what follows in one line.
PARETO_WARNING = "Estimated shape parameter of Pareto distribution is greater than 0.70"


def compare_fits(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """ArviZ's LOO comparison of the fits at ``paths``, named by their ``model`` attribute.

    Returns
    -------
    pandas.DataFrame
        One row per model: rank, elpd_loo, p_loo, elpd_diff, dse, weight, and the number of
        observations with Pareto k above 0.7 (where PSIS-LOO is unreliable).
    list of str
        ArviZ's other warnings, once each with how often they came (its Pareto k warnings are
        the table's last column).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = loo_table(paths)
    messages = Counter(
        str(w.message).split(". ")[0] for w in caught if PARETO_WARNING not in str(w.message)
    )
    return table, [f"{m} ({n} times)" if n > 1 else m for m, n in messages.items()]


def comparison_problems(paths: list[Path]) -> list[str]:
    """One line per file that cannot enter the comparison (unreadable, or without the pointwise
    log-likelihood of ``LOO_VARIABLE``)."""
    problems = []
    for path in paths:
        try:
            tree = xr.open_datatree(path)
        except (OSError, ValueError) as err:
            problems.append(f"{path}: not a fit.nc that can be read: {err}")
            continue
        if "log_likelihood" not in tree.children or LOO_VARIABLE not in tree["log_likelihood"]:
            problems.append(
                f"{path}: no pointwise log-likelihood of {LOO_VARIABLE} (cd49d fit writes it "
                "into fit.nc; a thinned or hand-made file lacks it)"
            )
    return problems


def loo_table(paths: list[Path]) -> pd.DataFrame:
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
