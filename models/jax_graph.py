"""A PyMC model compiled to JAX functions that take its data as inputs.

The batched sampler (``models.batch``) fits one model to many datasets of the same shape. It
needs the model's log density and its posterior quantities as pure functions of the
unconstrained parameters *and* the data, so that one compiled function serves every dataset.
Both come from the model's own PyTensor graph (PyMC's JAX conversion); the ``pm.Data``
variables named in ``data_names`` are replaced by inputs. Nothing here writes a likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.sampling.jax import get_jaxified_graph
from pytensor.graph.replace import graph_replace

jax.config.update("jax_enable_x64", True)  # binomial log densities of thousands of events


@dataclass(frozen=True)
class PosteriorLayout:
    """Names, shapes, dims and coordinates of the posterior quantities, in output order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dims: dict[str, tuple[str, ...]]
    coords: dict[str, list]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(shape)) for shape in self.shapes)

    def column_labels(self) -> list[str]:
        """``name[coord, coord]`` per scalar element, in the flattened (C) order."""
        labels = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            dims = self.dims.get(name, ())
            if not shape:
                labels.append(name)
                continue
            values = [self.coords.get(d, list(range(n))) for d, n in zip(dims, shape, strict=True)]
            for index in np.ndindex(*shape):
                keys = ", ".join(str(values[a][i]) for a, i in enumerate(index))
                labels.append(f"{name}[{keys}]")
        return labels


@dataclass(frozen=True)
class JaxModel:
    """A model's log density and posterior quantities as JAX functions of (position, data).

    ``position`` is the flat vector of unconstrained parameters (``value_names`` in order);
    ``data`` the tuple of data arrays in ``data_names`` order.
    """

    value_names: tuple[str, ...]
    value_shapes: tuple[tuple[int, ...], ...]
    data_names: tuple[str, ...]
    initial_position: np.ndarray
    layout: PosteriorLayout
    logdensity: Callable[[jax.Array, tuple], jax.Array]
    posterior: Callable[[jax.Array, tuple], jax.Array]

    @property
    def dimension(self) -> int:
        return int(self.initial_position.size)


def compile_to_jax(model: pm.Model, data_names: tuple[str, ...]) -> JaxModel:
    """Compile ``model`` with the named ``pm.Data`` variables as inputs.

    Parameters
    ----------
    model
        A PyMC model; its ``pm.Data`` variables ``data_names`` become function inputs.
    data_names
        The data that change between datasets (counts, gate sizes, exacerbations).

    Returns
    -------
    JaxModel
        ``logdensity`` includes the log-Jacobians of the transforms; ``posterior`` returns
        every free variable on its natural scale and every deterministic, flattened and
        concatenated in ``layout`` order.

    Raises
    ------
    KeyError
        If a name is not a ``pm.Data`` variable of the model.
    """
    shared = {v.name: v for v in model.data_vars}
    missing = [name for name in data_names if name not in shared]
    if missing:
        raise KeyError(f"not data of the model: {', '.join(missing)}")
    inputs = [
        pt.tensor(name=f"{name}_input", dtype=shared[name].dtype, shape=shared[name].type.shape)
        for name in data_names
    ]
    replacements = dict(zip([shared[name] for name in data_names], inputs, strict=True))
    logp = graph_replace([model.logp()], replacements, strict=False)
    # Free variables on their natural scale and deterministics (not the transformed values).
    named = [v for v in model.unobserved_value_vars if v.name in posterior_names(model)]
    outputs = graph_replace(named, replacements, strict=False)
    logp_fn = get_jaxified_graph(inputs=[*model.value_vars, *inputs], outputs=logp)
    posterior_fn = get_jaxified_graph(inputs=[*model.value_vars, *inputs], outputs=outputs)

    point = model.initial_point()
    value_names = tuple(v.name for v in model.value_vars)
    value_shapes = tuple(tuple(point[name].shape) for name in value_names)
    unflatten = make_unflatten(value_shapes)
    layout = posterior_layout(model, named)

    def logdensity(position, data):
        return logp_fn(*unflatten(position), *data)[0]

    def posterior(position, data):
        values = posterior_fn(*unflatten(position), *data)
        return jnp.concatenate([jnp.ravel(v).astype(jnp.float64) for v in values])

    return JaxModel(
        value_names=value_names,
        value_shapes=value_shapes,
        data_names=tuple(data_names),
        initial_position=np.concatenate([np.ravel(point[name]) for name in value_names]),
        layout=layout,
        logdensity=logdensity,
        posterior=posterior,
    )


def make_unflatten(shapes: tuple[tuple[int, ...], ...]) -> Callable[[jax.Array], list]:
    sizes = [int(np.prod(shape)) for shape in shapes]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)

    def unflatten(position):
        return [
            position[start : start + size].reshape(shape)
            for start, size, shape in zip(starts, sizes, shapes, strict=True)
        ]

    return unflatten


def posterior_names(model: pm.Model) -> set[str]:
    """Free variables and deterministics: what a posterior holds."""
    return {rv.name for rv in model.free_RVs} | {d.name for d in model.deterministics}


def posterior_layout(model: pm.Model, outputs: list) -> PosteriorLayout:
    """Names, shapes, dims and coordinates of the posterior outputs, in order."""
    point_fn = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore")
    values = point_fn(model.initial_point())
    names = [v.name for v in outputs]
    shapes = [tuple(np.shape(v)) for v in values]
    dims = {name: tuple(model.named_vars_to_dims.get(name, ())) for name in names}
    coords = {name: list(labels) for name, labels in model.coords.items()}
    return PosteriorLayout(tuple(names), tuple(shapes), dims, coords)
