r"""Which parameters the two Muons orthogonalize, decided by shape and role, with a table to check.

Muon's Newton-Schulz step is meant for weights that map hidden features to hidden features;
embeddings, positional tables, the output head and vectors (biases, norm scales) go to an Adam.
:func:`routes` decides per leaf; ``labels=`` (``"muon"``/``"adam"`` per leaf, a pytree or a
function of the params, prefixes allowed) or ``weight_dimension_numbers=`` (optax.contrib.muon's
convention: ``MuonDimensionNumbers`` for a Muon leaf, ``None`` for an Adam leaf) override it,
in :func:`gnbench.optim.first_order.muon.muon` and
:func:`gnbench.optim.first_order.muon_optax.muon_optax` alike.

Default rule. Names are matched lower-cased; an nnx ``Variable``'s ``.value`` is not a name; the
*top level* is the level below linen's ``"params"`` collection and below any single-entry wrapper
(:func:`top_level_depth`); "named X" means the leaf, its module or its top-level entry is named
X. The first rule that matches wins:

1. ``ndim < 2`` -> adam (vectors).
2. leaf named ``bias`` or ``scale`` (e.g. DenseGeneral's ``(heads, head_dim)`` bias) -> adam.
3. positional table: named ``wpe``, ``pos``, ``pos_*``, ``*_pos``, ``position*``, ``*pos_emb*``
   -> adam.
4. embedding: named ``wte``, ``embed*`` (``embedding``, ``Embed_0``), ``*_embed``,
   ``*_embedding(s)``, or an Equinox ``nn.Embedding``'s weight -> adam.
5. output head: named ``head``, ``*_head`` (``lm_head``), ``classifier``, ``logits``,
   ``readout``, ``unembed*`` -> adam.
6. output head by vocabulary: a 2-D leaf whose last axis is the vocabulary size ``V`` of the
   token embedding (the rule-4 table ``(V, d)`` with the most rows; ``V != d``) -> adam.
7. output layer of a stack: when the top-level layers (top-level entries holding a ``kernel`` or
   ``weight`` leaf directly) are all named ``<prefix><number>`` with one prefix (``Dense_0`` ..
   ``Dense_3``; ``fc1``, ``fc2``; an ``nnx.List``'s ``0`` .. ``n``), the highest-numbered one's
   matrices -> adam. (Its input layer stays with Muon.)
8. any other 2-D leaf -> muon, as the Flax ``(in, out)`` matrix: ``MuonDimensionNumbers(0, 1)``;
   but a weight whose layer class fixes its axes is read in them
   (:func:`gnbench.optim.pytrees.known_layouts`): an Equinox ``nn.Linear`` as ``(out, in)``,
   ``MuonDimensionNumbers(1, 0)``, an ``nn.Conv`` as ``(out, in, *window)``. The table's
   reason names the convention (rule 6 compares the output axis).
9. a >2-D leaf -> muon, reshaped by DenseGeneral's convention (input axes, then feature axes) to
   the ``(fan_in, fan_out)`` matrix, ``MuonDimensionNumbers(reduction_axis=input axes,
   output_axis=feature axes)``, no batch axes. The input axes are all but the last for a module
   named ``conv*`` (``(*window, in, out)``) or like an out-projection (``out``, ``o``, ``wo``,
   ``o_proj``, ``out_proj``, ``proj``, ``c_proj``, ``*_out``: ``DenseGeneral(axis=(-2, -1))``'s
   ``(heads, head_dim, d)``); the first only for an in-projection (``query``, ``key``, ``value``,
   ``q``, ``k``, ``v``, ``qkv``, ``[qkv]_proj``, ``in_proj``, ...: ``(d, heads, head_dim)``);
   otherwise by the model width ``d`` (rule 6's table's; without one in view, the most common
   size of the norm ``scale`` vectors, if there is a single one): the first only if only axis 0
   is ``d``, all but the last if only the last axis is ``d``; else the first only, with a
   warning.

Warnings (:class:`RoutingWarning`, one per distinct message): a 2-D leaf that rule 8 sends to Muon
though it is not named ``kernel``, ``weight`` or ``w``; a >2-D leaf split by rule 9's fallback;
two or more top-level layers of which rules 5-7 found no output layer (they all go to Muon). The
gnbench transformer triggers none; with an override none but rule 9's fallback.

Limits: rule 6 and rule 9's width see only the leaves a transform is given (rule 7 reads names,
which masking keeps); inside layerwise GN each block's inner Muon sees its own block (the others
are masked), so for a model whose head only rule 6 finds, or whose >2-D kernels only the width
splits and whose blocks hold no norms, pass the full tree's routing:
``weight_dimension_numbers=muon_dimension_numbers(params)``. Roles read from names cannot be
certain: look at ``print(format_routing(params))`` once and override what is wrong.

Example:
  >>> params = {"params": {"Embed_0": {"embedding": jnp.zeros((50, 8))},
  ...                      "Dense_0": {"kernel": jnp.zeros((8, 8)), "bias": jnp.zeros(8)},
  ...                      "Dense_1": {"kernel": jnp.zeros((8, 50))}}}
  >>> [row[2] for row in routing_table(params)]
  ['adam', 'muon', 'adam', 'adam']
  >>> routing_summary(params)
  'muon: 1 leaves, 64 params; adam: 3 leaves, 808 params'
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp  # noqa: F401  (the module docstring's example)
import optax
from optax.contrib import MuonDimensionNumbers

from gnbench.optim.pytrees import (
    Layout,
    call_or_tree,
    known_layouts,
    normalize_dims,
    path_names,
    top_level_depth,
)

GROUPS = ("muon", "adam")
OUTER_ADAM_ROLES = ("embedding", "positional", "head")  # muon_optax's own AdamW group.
MATRIX_NAMES = ("kernel", "weight", "w")

_POSITIONAL = re.compile(r"wpe|pos|pos_.*|.*_pos|position.*|.*pos_emb.*")
_EMBEDDING = re.compile(r"wte|embed.*|.*_embed|.*_embeddings?")
_HEAD = re.compile(r"head|.*_head|classifier|logits|readout|unembed.*")
_CONV = re.compile(r"conv.*")
_OUT_PROJ = re.compile(r"out|o|wo|o_proj|out_proj|proj|c_proj|.*_out")
_IN_PROJ = re.compile(r"query|key|value|q|k|v|qkv|wq|wk|wv|wqkv|[qkv]_proj|in_proj|c_attn")
_NUMBERED = re.compile(r"(.*?)(\d+)")
_ROLES = (("positional", _POSITIONAL), ("embedding", _EMBEDDING), ("head", _HEAD))


class RoutingWarning(UserWarning):
    """The default routing rule guessed for some leaf: check :func:`format_routing`."""


class Route(NamedTuple):
    """One leaf's routing: ``group`` is ``"muon"`` or ``"adam"``; ``dims`` its Muon axes."""

    path: str
    shape: tuple[int, ...]
    group: str
    dims: MuonDimensionNumbers | None
    reason: str
    role: str


def _places(names: tuple[str, ...], depth: int) -> list[str]:
    """Lower-cased leaf, module and top-level entry names of a leaf."""
    picks = [names[-1], names[-2] if len(names) > 1 else "", names[min(depth, len(names) - 1)]]
    return sorted({p.lower() for p in picks if p})


class _Context(NamedTuple):
    depth: int
    vocab: int | None
    width: int | None
    layers: tuple[str, ...]
    output_layer: str | None
    head_named: bool
    layouts: dict[tuple[str, ...], Layout]


def _flatten(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    """``(names, leaf)`` per leaf; masked leaves (``optax.MaskedNode``) come as ``None``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, optax.MaskedNode)
    )
    return [(path_names(p), None if isinstance(x, optax.MaskedNode) else x) for p, x in flat]


def _context(leaves: list[tuple[tuple[str, ...], Any]], layouts: dict) -> _Context:
    names = [n for n, _ in leaves]
    depth = top_level_depth(names)
    tables = [
        tuple(x.shape)
        for n, x in leaves
        if x is not None
        and len(x.shape) == 2
        and (
            getattr(layouts.get(n), "role", None) == "embedding"
            or any(_EMBEDDING.fullmatch(p) for p in _places(n, depth))
        )
        and not any(_POSITIONAL.fullmatch(p) for p in _places(n, depth))
    ]
    vocab, width = max(tables) if tables else (None, None)
    if vocab == width:
        vocab = None
    if width is None:  # No embedding in view (a layerwise block): the norms' size, if clear.
        sizes = Counter(x.shape[0] for n, x in leaves if x is not None and n[-1] == "scale")
        common = sizes.most_common(2)
        if common and (len(common) == 1 or common[0][1] > common[1][1]):
            width = common[0][0]
    layers = tuple(
        sorted({n[depth] for n in names if len(n) == depth + 2 and n[-1].lower() in MATRIX_NAMES})
    )
    matches = [_NUMBERED.fullmatch(layer) for layer in layers]
    output_layer = None
    if layers and all(matches) and len({m.group(1) for m in matches}) == 1:
        output_layer = max(matches, key=lambda m: int(m.group(2))).group(0)
    head_named = any(_HEAD.fullmatch(p) for n in names for p in _places(n, depth))
    return _Context(depth, vocab, width, layers, output_layer, head_named, layouts)


def _split(names, shape, ctx) -> tuple[MuonDimensionNumbers, str, bool]:
    """Rules 8 and 9: the Muon axes of a >=2-D leaf, why, and whether it was a guess."""
    k = len(shape)
    known = ctx.layouts.get(names)
    if known is not None and known.dims is not None:
        return known.dims, f"hidden matrix as {known.text}", False
    if k == 2:
        doubt = names[-1] not in MATRIX_NAMES
        return MuonDimensionNumbers((0,), (1,)), "hidden matrix as (in, out): flax", doubt
    module = names[-2].lower() if len(names) > 1 else ""
    doubt = False
    if _CONV.fullmatch(module) or _OUT_PROJ.fullmatch(module):
        s, why = k - 1, f"module {names[-2]!r}"
    elif _IN_PROJ.fullmatch(module):
        s, why = 1, f"module {names[-2]!r}"
    elif ctx.width and (shape[0] == ctx.width) != (shape[-1] == ctx.width):
        s = 1 if shape[0] == ctx.width else k - 1
        why = f"model width {ctx.width} on axis {0 if s == 1 else k - 1}"
    else:
        s, why, doubt = 1, "DenseGeneral default: first axis is the input", True
    dims = MuonDimensionNumbers(tuple(range(s)), tuple(range(s, k)))
    fan_in, fan_out = math.prod(shape[:s]), math.prod(shape[s:])
    return dims, f"hidden kernel as ({fan_in}, {fan_out}), axes {dims[0]}|{dims[1]}: {why}", doubt


def _default(names, shape, ctx) -> tuple[str, MuonDimensionNumbers | None, str, str, bool]:
    """``(group, dims, reason, role, doubt)`` of one visible leaf under the default rule."""
    if len(shape) < 2:
        return "adam", None, f"vector (ndim {len(shape)})", "vector", False
    if names[-1].lower() in ("bias", "scale"):
        return "adam", None, f"{names[-1].lower()} (ndim {len(shape)})", "vector", False
    known = ctx.layouts.get(names)
    if known is not None and known.role != "hidden":
        return "adam", None, f"{known.role} ({known.text})", known.role, False
    for role, pattern in _ROLES:
        hit = next((p for p in _places(names, ctx.depth) if pattern.fullmatch(p)), None)
        if hit is not None:
            return "adam", None, f"{role} (name {hit!r})", role, False
    out_axis = known.dims.output_axis[-1] if known is not None and known.dims else -1
    if len(shape) == 2 and ctx.vocab and shape[out_axis] == ctx.vocab:
        return "adam", None, f"output head (last axis = vocabulary {ctx.vocab})", "head", False
    if ctx.output_layer is not None and len(names) > ctx.depth + 1:
        if names[ctx.depth] == ctx.output_layer:
            stack = f"{ctx.layers[0]}..{ctx.output_layer}" if len(ctx.layers) > 1 else "one"
            return "adam", None, f"output layer (last of top-level layers {stack})", "head", False
    dims, reason, doubt = _split(names, shape, ctx)
    return "muon", dims, reason, "hidden", doubt


def _overrides(tree: Any, is_leaf: Callable[[Any], bool]) -> dict[tuple[str, ...], Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {path_names(p): x for p, x in flat if not isinstance(x, optax.MaskedNode)}


def _find(table: dict, names: tuple[str, ...], what: str) -> tuple[Any, bool]:
    """The override for ``names`` (its own entry or the longest prefix's), and if it is own."""
    for n in range(len(names), -1, -1):
        if names[:n] in table:
            return table[names[:n]], n == len(names)
    raise ValueError(f"{what} has no entry for the leaf {'/'.join(names)!r}")


def routes(
    params: Any, labels: Any = None, weight_dimension_numbers: Any = None
) -> dict[tuple[str, ...], Route]:
    """The :class:`Route` of every leaf of ``params``, keyed by its names (masked ones skipped).

    Args:
      params: a parameter pytree (dict, linen ``{"params": ...}``, nnx ``State``; shapes only).
      labels: ``None`` (the default rule), or a pytree / ``params -> pytree`` of ``"muon"`` /
        ``"adam"`` (a prefix of ``params`` is fine: a prefix's ``"muon"`` covers the >=2-D
        leaves under it, its vectors stay with Adam); a leaf sent to muon gets the default
        rule's axes for it (rules 8, 9).
      weight_dimension_numbers: ``None``, or a pytree / ``params -> pytree`` of
        ``MuonDimensionNumbers`` (muon) or ``None`` (adam), as ``optax.contrib.muon`` takes.

    Returns:
      ``{names: Route}`` in pytree order.
    """
    if labels is not None and weight_dimension_numbers is not None:
        raise ValueError("pass labels= or weight_dimension_numbers=, not both")
    leaves = _flatten(params)
    ctx = _context(leaves, known_layouts(params))
    table = None
    if labels is not None:
        table = _overrides(call_or_tree(labels, params), lambda x: x is None)
    elif weight_dimension_numbers is not None:
        wdn = weight_dimension_numbers
        table = _overrides(
            call_or_tree(wdn, params),
            lambda x: x is None or isinstance(x, MuonDimensionNumbers | optax.MaskedNode),
        )
    out, doubts, head_by_shape = {}, [], False
    for names, x in leaves:
        if x is None:
            continue
        shape, path = tuple(x.shape), "/".join(names)
        group, dims, reason, role, doubt = _default(names, shape, ctx)
        head_by_shape |= role == "head"
        if labels is not None:
            want, own = _find(table, names, "labels=")
            if want not in GROUPS:
                raise ValueError(f"labels= gave {want!r} for {path!r}; valid: {GROUPS}")
            if want == "muon" and not own and len(shape) < 2:
                want = "adam"  # A prefix's "muon" means its matrices; its vectors stay Adam's.
            doubt = doubt and want == "muon" and len(shape) > 2
            if want != group:
                if want == "muon" and len(shape) < 2:
                    raise ValueError(f"labels= sends {path!r} {shape} to Muon; label it 'adam'")
                reason = f"labels= (default: {group}, {reason})"
                dims, doubt = None, False
                if want == "muon":
                    dims, why, doubt = _split(names, shape, ctx)
                    reason, doubt = f"{reason}: {why}", doubt and len(shape) > 2
                group = want
        elif table is not None:
            given, _ = _find(table, names, "weight_dimension_numbers=")
            where = f"weight_dimension_numbers= for {path!r}"
            new_dims = None if given is None else normalize_dims(given, shape, where)
            if new_dims != dims:
                reason = f"weight_dimension_numbers= (default: {group}, {reason})"
            group, dims, doubt = ("adam" if given is None else "muon"), new_dims, False
        if doubt:
            doubts.append(f"{path} {shape} ({reason})")
        out[names] = Route(path, shape, group, dims, reason, role)
    if table is None and len(ctx.layers) >= 2 and not (ctx.head_named or head_by_shape):
        doubts.append(f"no output layer among top-level layers {', '.join(ctx.layers)}")
    if doubts:
        warnings.warn(
            "Muon routing guessed: "
            + "; ".join(doubts)
            + ". Check print(gnbench.optim.routing.format_routing(params)); override with "
            "labels= or weight_dimension_numbers=",
            RoutingWarning,
            stacklevel=3,
        )
    return out


def warn_if_no_muon(table: dict[tuple[str, ...], Route], tree: Any, who: str) -> None:
    """Warns when no leaf of a whole (unmasked) tree goes to Muon: the transform is AdamW."""
    masked = any(
        isinstance(x, optax.MaskedNode)
        for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    )
    if table and not masked and all(r.group != "muon" for r in table.values()):
        warnings.warn(
            f"{who}: no parameter is routed to Muon (no hidden matrix among "
            f"{len(table)} leaves), so every leaf gets AdamW; use optax.adamw, or route "
            "matrices with labels= / weight_dimension_numbers=",
            RoutingWarning,
            stacklevel=4,
        )


def label_tree(tree: Any, table: dict[tuple[str, ...], Route], field: Callable[[Route], Any]):
    """``tree`` with each visible leaf replaced by ``field(route)`` (masked nodes kept)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: field(table[path_names(p)]), tree)


def dims_lookup(table: dict[tuple[str, ...], Route]) -> Callable[[Any], Any]:
    """``tree -> pytree of MuonDimensionNumbers | None`` by path, for a (masked) subtree."""
    return lambda tree: label_tree(tree, table, lambda r: r.dims)


def muon_labels(params: Any, labels: Any = None, weight_dimension_numbers: Any = None) -> Any:
    """``"muon"``/``"adam"`` per leaf, shaped like ``params`` (see :func:`routes`)."""
    return label_tree(params, routes(params, labels, weight_dimension_numbers), lambda r: r.group)


def muon_dimension_numbers(params: Any, labels: Any = None, weight_dimension_numbers: Any = None):
    """The routing in optax's convention: ``MuonDimensionNumbers`` per Muon leaf, else ``None``."""
    return label_tree(params, routes(params, labels, weight_dimension_numbers), lambda r: r.dims)


def routing_table(params: Any, labels: Any = None, weight_dimension_numbers: Any = None):
    """Rows ``(path, shape, group, reason)``, one per leaf, in pytree order.

    The reason names the axis convention each Muon matrix is read in, e.g. ``hidden matrix as
    (in, out): flax`` or ``hidden matrix as (out, in): equinox Linear``.
    """
    table = routes(params, labels, weight_dimension_numbers)
    return [(r.path, r.shape, r.group, r.reason) for r in table.values()]


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K" if n >= 1e4 else str(n)


def _is_rows(x: Any) -> bool:
    """Whether ``x`` is :func:`routing_table`'s output rather than a parameter tree."""
    return (
        isinstance(x, list)
        and bool(x)
        and all(isinstance(r, tuple) and len(r) == 4 and isinstance(r[0], str) for r in x)
    )


def _rows(params_or_rows: Any, labels: Any, weight_dimension_numbers: Any) -> list[tuple]:
    if not _is_rows(params_or_rows):
        return routing_table(params_or_rows, labels, weight_dimension_numbers)
    if labels is not None or weight_dimension_numbers is not None:
        raise ValueError("given routing_table(...) rows, pass labels= to routing_table, not here")
    return params_or_rows


def routing_summary(
    params_or_rows: Any, labels: Any = None, weight_dimension_numbers: Any = None
) -> str:
    """One line: ``"muon: 28 leaves, 0.79M params; adam: 13 leaves, 0.07M params"``.

    Takes the params (and the overrides) or the rows of :func:`routing_table`.
    """
    rows = _rows(params_or_rows, labels, weight_dimension_numbers)
    parts = []
    for group in GROUPS:
        sizes = [math.prod(shape) for _, shape, g, _ in rows if g == group]
        parts.append(f"{group}: {len(sizes)} leaves, {_count(sum(sizes))} params")
    return "; ".join(parts)


def format_routing(
    params_or_rows: Any, labels: Any = None, weight_dimension_numbers: Any = None
) -> str:
    """The routing table as aligned text, the summary line last.

    Takes the params (and the overrides) or the rows of :func:`routing_table`:
    ``format_routing(params)`` and ``format_routing(routing_table(params))`` print the same.

    Example:
      >>> print(format_routing({"w": jnp.zeros((2, 3))}))
      path  shape             group  reason
      w     (2, 3)            muon   hidden matrix as (in, out): flax
      muon: 1 leaves, 6 params; adam: 0 leaves, 0 params
    """
    rows = _rows(params_or_rows, labels, weight_dimension_numbers)
    width = max([len(r[0]) for r in rows] + [4])
    lines = [f"{'path':<{width}}  {'shape':<16}  group  reason"]
    lines += [f"{p:<{width}}  {str(s):<16}  {g:<5}  {why}" for p, s, g, why in rows]
    return "\n".join([*lines, routing_summary(rows)])


__all__ = [
    "Route",
    "RoutingWarning",
    "dims_lookup",
    "format_routing",
    "label_tree",
    "muon_dimension_numbers",
    "muon_labels",
    "normalize_dims",
    "path_names",
    "routes",
    "routing_summary",
    "routing_table",
    "top_level_depth",
    "warn_if_no_muon",
]
