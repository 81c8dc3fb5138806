"""The package's import graph: no circles between modules, no upward imports between layers.

Layers (each may import only the ones before it): ``activations`` -> ``kernels`` -> ``priors``
-> ``models``; ``infer`` is a foundation that imports no other bayesact package (any layer may
use it). Every ``import`` counts, also those inside functions.
"""

from __future__ import annotations

import ast
import pathlib

import bayesact

ROOT = pathlib.Path(bayesact.__file__).parent
ORDER = ("activations", "kernels", "priors", "models")


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = ("bayesact", *path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, `level - 1` packages up
                    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join(package + ([base] if base else []))
                if base.startswith("bayesact"):
                    targets = [resolve(f"{base}.{alias.name}") for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.startswith("bayesact")]
            edges[module] |= {t for t in targets if t != module}
    return edges


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import circles; a module importing its own package's ``__init__`` (a re-export) is not one."""
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if u.startswith(v + "."):
                continue
            if state.get(v) == 1:
                found.append([*stack[stack.index(v):], v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return found


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_sees_a_circle() -> None:
    edges = {"bayesact.infer.a": {"bayesact.infer.b"}, "bayesact.infer.b": {"bayesact.infer.a"}}
    assert _cycles(edges) == [["bayesact.infer.a", "bayesact.infer.b", "bayesact.infer.a"]]


def test_no_upward_imports_between_layers() -> None:
    upward = []
    for module, targets in _graph().items():
        src = _layer(module)
        for target in targets:
            dst = _layer(target)
            if dst in ("", src):
                continue
            if src == "infer" or (dst != "infer" and src in ORDER and ORDER.index(dst) > ORDER.index(src)):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_every_package_is_placed_in_the_layers() -> None:
    layers = {_layer(m) for m in _modules()} - {""}
    assert layers <= {*ORDER, "infer"}, f"place {sorted(layers - {*ORDER, 'infer'})} in the layer picture"
