"""Draw data from a model's own graph with some parameters fixed (``pm.do``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pymc as pm


def draw_with_fixed(
    model: pm.Model,
    fixed: Mapping[str, np.ndarray | float],
    var_names: Sequence[str],
    *,
    draws: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Fix parameters by intervention and draw the named variables from the resulting graph.

    Parameters
    ----------
    model
        A model built with its outcomes unobserved (``observed=False``).
    fixed
        Values for free variables, by name, in the variable's shape.
    var_names
        Variables to draw (outcomes and any latent quantity wanted alongside).
    draws
        Number of independent draws; each array gets a leading axis of this length.
    seed
        Seed for PyMC's random generator.

    Returns
    -------
    dict
        One array per name, shape ``(draws, *variable_shape)``.

    Raises
    ------
    KeyError
        If a fixed or requested name is not a variable of the model.
    """
    unknown = [name for name in [*fixed, *var_names] if name not in model.named_vars]
    if unknown:
        raise KeyError(f"not variables of the model: {', '.join(unknown)}")
    intervened = pm.do(model, {name: np.asarray(value) for name, value in fixed.items()})
    values = pm.draw([intervened[name] for name in var_names], draws=draws, random_seed=seed)
    if draws == 1:  # pm.draw drops the draw axis for a single draw
        values = [np.expand_dims(value, 0) for value in values]
    return dict(zip(var_names, values, strict=True))
