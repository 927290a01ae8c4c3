"""A PyMC model compiled to JAX functions that take its data as inputs.

The batched sampler (``models.batch``) fits one model to many datasets of the same shape. It
needs the model's log density and its posterior quantities as pure functions of the
unconstrained parameters *and* the data, so that one compiled function serves every dataset.
Both come from the model's own PyTensor graph (PyMC's JAX conversion); the ``pm.Data``
variables named in ``data_names`` are replaced by inputs. Nothing here writes a likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.sampling.jax import get_jaxified_graph
from pytensor.compile.ops import ViewOp
from pytensor.graph.basic import Constant
from pytensor.graph.replace import graph_replace
from pytensor.graph.traversal import graph_inputs
from pytensor.scalar import basic as ps
from pytensor.scalar import math as psm
from pytensor.tensor.elemwise import Elemwise

jax.config.update("jax_enable_x64", True)  # binomial log densities of thousands of events


@dataclass(frozen=True)
class PosteriorLayout:
    """Names, shapes, dims and coordinates of the posterior quantities, in output order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dims: dict[str, tuple[str, ...]]
    coords: dict[str, list]
    #: Quantities that are a strictly increasing, element-wise function of another one
    #: (``rank_sources``): name -> that other quantity's name.
    rank_source: dict[str, str] = field(default_factory=dict)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(shape)) for shape in self.shapes)

    def statistics_columns(self) -> np.ndarray:
        """Per column, the column whose rank statistics it shares: its own, or for an increasing
        function of another (``rank_source``) the same element of that one."""
        starts = dict(zip(self.names, np.cumsum([0, *self.sizes[:-1]]), strict=True))
        columns = []
        for name, size in zip(self.names, self.sizes, strict=True):
            source = self.rank_source.get(name, name)
            columns += range(starts[source], starts[source] + size)
        return np.asarray(columns, dtype=np.int64)

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
    shape_of = dict(zip(names, shapes, strict=True))
    sources = {
        name: source
        for name, source in rank_sources(model).items()
        if name in shape_of and shape_of.get(source) == shape_of[name]
    }
    return PosteriorLayout(tuple(names), tuple(shapes), dims, coords, sources)


# --- quantities with the same ranks -----------------------------------------------------------

#: Scalar operations strictly monotone in their one argument: +1 increasing, -1 decreasing.
MONOTONE_UNARY = {
    ps.Exp: 1, ps.Expm1: 1, ps.Log: 1, ps.Log1p: 1, ps.Sqrt: 1, ps.Tanh: 1,
    psm.Erf: 1, psm.Sigmoid: 1, psm.Softplus: 1, ps.Neg: -1, psm.Erfc: -1,
}  # fmt: skip


def rank_sources(model: pm.Model) -> dict[str, str]:
    """Deterministics that are a strictly increasing function of one other posterior quantity,
    element by element (``positive_rate_subject = invlogit(subject_logit)``): name -> source.

    Ranks are invariant under such a function, and so are bulk R-hat, bulk ESS and tail ESS
    (Vehtari et al. 2021): the gate computes them once (``models.chain_stats``). Found by
    walking the deterministic's graph through monotone unary operations and through shifts and
    scalings by constants, down to another free variable or deterministic; shapes are checked
    by the caller.
    """
    named = {id(v): v.name for v in [*model.free_RVs, *model.deterministics]}
    sources = {}
    for variable in model.deterministics:
        found = monotone_source(strip_views(variable.owner.inputs[0]), named)
        if found is not None and found[1] > 0 and found[0] != variable.name:
            sources[variable.name] = found[0]
    resolved = {}
    for name, source in sources.items():
        seen = {name}
        while source in sources and source not in seen:  # a transform of a transform
            seen.add(source)
            source = sources[source]
        resolved[name] = source
    return resolved


def strip_views(variable):
    """``variable`` without the identity operations around it (a deterministic's view)."""
    while variable.owner is not None and isinstance(variable.owner.op, ViewOp):
        variable = variable.owner.inputs[0]
    return variable


def monotone_source(variable, named: dict[int, str]) -> tuple[str, int] | None:
    """The named quantity of which ``variable`` is a strictly monotone element-wise function
    and the direction (+1 increasing, -1 decreasing), or None."""
    direction = 1
    while id(variable) not in named:
        node = variable.owner
        if node is None or not isinstance(node.op, Elemwise):
            return None
        varying = [x for x in node.inputs if constant_sign(x) is None]
        if len(varying) != 1:
            return None
        step = monotone_direction(node, varying[0])
        if not step:
            return None
        direction *= step
        variable = strip_views(varying[0])
    return named[id(variable)], direction


def monotone_direction(node, varying) -> int:
    """+1 or -1 if an element-wise node is strictly increasing or decreasing in its one varying
    input (the others constants), else 0."""
    op = type(node.op.scalar_op)
    others = [x for x in node.inputs if x is not varying]
    if op in MONOTONE_UNARY:
        return MONOTONE_UNARY[op]
    if op is ps.Add:
        return 1
    if op is ps.Sub:
        return 1 if node.inputs[0] is varying else -1
    if op is ps.Mul:
        return int(np.prod([constant_sign(x) for x in others]))
    if op is ps.TrueDiv and node.inputs[0] is varying:
        return constant_sign(others[0])
    return 0


def constant_sign(variable) -> int | None:
    """+1 or -1 for a constant whose elements are all positive or all negative, 0 for another
    constant, None for a variable."""
    if not all(isinstance(root, Constant) for root in graph_inputs([variable])):
        return None
    values = np.asarray(variable.data if isinstance(variable, Constant) else variable.eval())
    return 1 if np.all(values > 0) else -1 if np.all(values < 0) else 0
