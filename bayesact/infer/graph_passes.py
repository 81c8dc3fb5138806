"""Per-call work removed from a captured ATen graph before it runs as Python code.

A graph captured by ``make_fx`` from a Pyro model replays every operation the model ran,
including those that do not depend on the graph's inputs (a prior's ``log(scale)``, Python
scalars turned into tensors, ``ones``/``zeros`` of fixed shape) and views that change nothing
(``view`` to the same shape, ``expand`` to the same size, ``permute`` by the identity). Each
costs a dispatch (microseconds) at every call, which for a small model is as much as the
arithmetic. :func:`simplify` evaluates the input-independent operations once and stores their
results as constants, and drops the identity views; the graph computes the same numbers
(bit for bit: the folded operations are the ones that would have run, on the same values), and
its generated code calls the operators' C++ entry points directly (:func:`direct_calls`).
"""

from __future__ import annotations

import itertools
import re
import types
from typing import Any

import torch
from torch.fx import GraphModule, Node

__all__ = ["direct_calls", "fetch_attr", "simplify"]

aten = torch.ops.aten

# (``detach`` included: the graphs simplified here run without autograd, where it only aliases)
_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.expand.default,
          aten.alias.default, aten.detach.default}
_SQUEEZES = {aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default}
_IDENTITY = {aten.add.Tensor: 0.0, aten.sub.Tensor: 0.0, aten.mul.Tensor: 1.0, aten.div.Tensor: 1.0}
_COMMUTATIVE = {aten.add.Tensor, aten.mul.Tensor}
# operations whose result depends only on the shape, dtype and device of their tensor argument
_SHAPE_ONLY = {aten.zeros_like.default, aten.ones_like.default, aten.full_like.default,
               aten.new_zeros.default, aten.new_ones.default, aten.new_full.default,
               aten.new_empty.default, aten.empty_like.default}


def _nodes_in(value: Any) -> list[Node]:
    out: list[Node] = []
    torch.fx.node.map_arg(value, out.append)
    return out


def _is_pure(node: Node) -> bool:
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return False
    schema = target._schema
    if schema.is_mutable or any(tag == torch.Tag.nondeterministic_seeded for tag in target.tags):
        return False
    return not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def simplify(graph: GraphModule, *example: torch.Tensor) -> GraphModule:
    """Fold the input-independent operations of ``graph`` into constants and drop identity views,
    in place; ``example`` are inputs with the shapes of the real calls. Returns ``graph``."""
    if any(not _is_pure(n) for n in graph.graph.nodes if n.op == "call_function"):
        return graph  # a mutating or random operation: leave the graph as it is
    values: dict[Node, Any] = {}
    constant: set[Node] = set()
    placeholders = iter(example)
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            values[node] = next(placeholders)
        elif node.op == "get_attr":
            values[node] = fetch_attr(graph, str(node.target))
            constant.add(node)
        elif node.op == "call_function":
            args = torch.fx.node.map_arg(node.args, lambda n: values[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: values[n])
            values[node] = node.target(*args, **kwargs)
            inputs = _nodes_in((node.args, node.kwargs))
            if node.target in _SHAPE_ONLY or all(n in constant for n in inputs):
                constant.add(node)
    count = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function":
            continue
        value = values[node]
        if node in constant and isinstance(value, torch.Tensor) and any(
            u.op != "output" for u in node.users
        ):
            name = f"_folded_{count}"
            count += 1
            # a plain attribute (not a buffer): the generated code reads it without Module.__getattr__;
            # the value itself, not a copy (an expanded constant keeps its zero strides)
            setattr(graph, name, value.detach())
            with graph.graph.inserting_before(node):
                replacement = graph.graph.create_node("get_attr", name)
            values[replacement] = value
            constant.add(replacement)
            node.replace_all_uses_with(replacement)
        elif isinstance(value, torch.Tensor):
            same = _same_value_source(node, values, constant)
            if same is not None:
                node.replace_all_uses_with(same)
    _slices_to_cat(graph.graph, values)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return direct_calls(graph)


_CALL = re.compile(r"torch\.ops\.aten\.(\w+)\.(\w+)\(")


def direct_calls(graph: GraphModule) -> GraphModule:
    """Give ``graph`` (on the instance) a ``forward`` that calls each ATen operator's C++ entry
    point (``OpOverload._op``, what ``OpOverload.__call__`` calls) without the Python frame of
    ``__call__``: the same operations, some 0.5 µs less each. Returns ``graph``."""
    code = graph.graph.python_code(root_module="self")
    scope = dict(code.globals)

    def bind(match: re.Match[str]) -> str:
        name = f"_aten_{match.group(1)}_{match.group(2)}"
        scope[name] = getattr(getattr(torch.ops.aten, match.group(1)), match.group(2))._op
        return name + "("

    source = _CALL.sub(bind, code.src)
    exec(compile(source, f"<bayesact.infer.graph_passes:{id(graph)}>", "exec"), scope)
    graph.forward = types.MethodType(scope["forward"], graph)
    return graph


def _slice_leaves(node: Node, root: bool) -> list[Node] | None:
    """The ``slice_backward`` nodes summed by the tree of additions at ``node``, or None."""
    if node.op != "call_function":
        return None
    if node.target == aten.slice_backward.default and (root or len(node.users) == 1):
        return [node]
    if node.target == aten.add.Tensor and (root or len(node.users) == 1) and not node.kwargs:
        parts = [_slice_leaves(a, False) if isinstance(a, Node) else None for a in node.args]
        if all(p is not None for p in parts):
            return [leaf for p in parts for leaf in p or []]
    return None


def _slices_to_cat(graph: torch.fx.Graph, values: dict[Node, Any]) -> None:
    """Replace a sum of ``slice_backward`` pieces that tile a tensor (the gradient of a flat
    vector split into sites: zeros everywhere but one slice, added up) by one ``cat``."""
    for node in list(graph.nodes):
        if node.target != aten.add.Tensor or not isinstance(values.get(node), torch.Tensor):
            continue
        if any(u.target == aten.add.Tensor and _slice_leaves(u, False) is not None for u in node.users):
            continue  # not the root of the tree
        leaves = _slice_leaves(node, True)
        if not leaves or len(leaves) < 2:
            continue
        specs: list[Any] = [tuple(leaf.args[1:]) for leaf in leaves]  # (sizes, dim, start, end, step)
        sizes, dim = specs[0][0], specs[0][1]
        if any(sp[0] != sizes or sp[1] != dim or sp[4] != 1 for sp in specs):
            continue
        order = sorted(range(len(leaves)), key=lambda i: specs[i][2])
        bounds = [(specs[i][2], specs[i][3]) for i in order]
        tiled = bounds[0][0] == 0 and bounds[-1][1] == sizes[dim] and all(
            a[1] == b[0] for a, b in itertools.pairwise(bounds))
        pieces: list[Any] = [leaves[i].args[0] for i in order]
        if not tiled or not all(_like_shape(values.get(p), leaves[i], values)
                                for p, i in zip(pieces, order, strict=True)):
            continue
        with graph.inserting_before(node):
            cat = graph.call_function(aten.cat.default, (pieces, dim))
        values[cat] = values[node]
        node.replace_all_uses_with(cat)


def _like_shape(piece: Any, leaf: Node, values: dict[Node, Any]) -> bool:
    full = values[leaf]
    spec: Any = leaf.args[1:5]
    sizes, dim, start, end = spec  # slice_backward's arguments
    expected = list(sizes)
    expected[dim] = end - start
    return (isinstance(piece, torch.Tensor) and list(piece.shape) == expected
            and piece.dtype == full.dtype and piece.device == full.device)


def _like(a: Any, b: torch.Tensor) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype and a.device == b.device)


def _all_equal(value: Any, target: float) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == target
    return isinstance(value, torch.Tensor) and value.numel() > 0 and bool((value == target).all())


def _same_value_source(node: Node, values: dict[Node, Any], constant: set[Node]) -> Node | None:
    """An earlier node holding the same numbers (same shape, strides, dtype) as ``node``, or None.

    Follows chains of views, size-1 reductions and arithmetic with an identity constant
    (``x + 0``, ``x - 0``, ``x * 1``, ``x / 1``) back to their source.
    """
    value = values[node]
    current = node
    while current.op == "call_function":
        args: Any = current.args
        target = current.target
        source: Any = None
        if target in _VIEWS or target in _SQUEEZES or target == aten.permute.default:
            source = args[0]
        elif target == aten.sum.dim_IntList and isinstance(args[0], Node):
            dims = args[1] if len(args) > 1 else None
            shape = values[args[0]].shape
            if dims is not None and all(shape[d] == 1 for d in dims):
                source = args[0]
        elif (target == aten.pow.Tensor_Scalar and len(args) == 2 and args[1] == 1
              and not any(u.op == "output" for u in current.users)):
            source = args[0]  # x ** 1, a copy of x (autograd's derivative of x ** 2 has one)
        elif target in _IDENTITY and len(args) == 2 and not current.kwargs:
            unit = _IDENTITY[target]
            left, right = args
            right_value = values[right] if isinstance(right, Node) else right
            left_value = values[left] if isinstance(left, Node) else left
            right_constant = not isinstance(right, Node) or right in constant
            left_constant = not isinstance(left, Node) or left in constant
            if right_constant and _all_equal(right_value, unit):
                source = left
            elif target in _COMMUTATIVE and left_constant and _all_equal(left_value, unit):
                source = right
        if not isinstance(source, Node) or source in constant:
            return None
        if _like(values[source], value):
            return source
        current = source
    return None


def fetch_attr(graph: GraphModule, target: str) -> Any:
    """The attribute a ``get_attr`` node of ``graph`` reads (``target``: a dotted path)."""
    owner = graph
    *path, name = target.split(".")
    for part in path:
        owner = getattr(owner, part)
    return getattr(owner, name)
