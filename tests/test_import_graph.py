"""The package's import graph: no circles between modules, no upward imports between layers.

Layers (each may import only the ones before it): ``activations`` -> ``kernels`` -> ``priors``
-> ``models``; ``infer`` is a foundation that imports no other bayesact package (any layer may
use it). Above them the command-line entry modules (``bayesact.pfn_train``) may import every
layer, and nothing may import them. Every ``import`` counts, also those inside functions.
"""

from __future__ import annotations

import ast
import pathlib

import bayesact

ROOT = pathlib.Path(bayesact.__file__).parent
ORDER = ("activations", "kernels", "priors", "models")
#: top-level modules that may import every layer (command-line entries); nothing imports them
ENTRY_POINTS = ("pfn_train",)
#: top-level modules every layer (infer included) may import; they import no layer, only the
#: foundations listed before them
FOUNDATIONS = ("compilation", "compile_packages")


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


def _upward(edges: dict[str, set[str]]) -> list[str]:
    """The imports that break the layer rule."""
    upward = []
    for module, targets in edges.items():
        src = _layer(module)
        for target in targets:
            dst = _layer(target)
            below = dst in FOUNDATIONS and (
                src not in FOUNDATIONS or FOUNDATIONS.index(dst) < FOUNDATIONS.index(src))
            if dst in ("", src) or src in ENTRY_POINTS or below:
                continue
            if (src in FOUNDATIONS or dst in ENTRY_POINTS or src == "infer"
                    or (dst != "infer" and src in ORDER and ORDER.index(dst) > ORDER.index(src))):
                upward.append(f"{module} -> {target}")
    return upward


def test_no_upward_imports_between_layers() -> None:
    assert _upward(_graph()) == []


def test_the_layer_rule_allows_only_the_entry_point_to_import_every_layer() -> None:
    top = {"bayesact.pfn_train": {"bayesact.models.pfn", "bayesact.priors.dataset", "bayesact.infer"}}
    assert _upward(top) == []
    rejected = {
        "bayesact.priors.dataset.gp": {"bayesact.models.pfn"},  # priors -> models
        "bayesact.infer.pfn_training": {"bayesact.models.pfn"},  # infer is generic
        "bayesact.models.pfn": {"bayesact.pfn_train"},  # nothing imports an entry point
        "bayesact.infer.run": {"bayesact.pfn_train"},
    }
    assert sorted(_upward(rejected)) == [
        "bayesact.infer.pfn_training -> bayesact.models.pfn",
        "bayesact.infer.run -> bayesact.pfn_train",
        "bayesact.models.pfn -> bayesact.pfn_train",
        "bayesact.priors.dataset.gp -> bayesact.models.pfn",
    ]


def _unplaced(modules: set[str]) -> list[str]:
    """Packages and top-level modules that are neither a layer nor an entry point."""
    return sorted({_layer(m) for m in modules} - {"", *ORDER, "infer", *ENTRY_POINTS, *FOUNDATIONS})


def test_every_package_is_placed_in_the_layers() -> None:
    unplaced = _unplaced(set(_modules()))
    assert unplaced == [], f"place {unplaced} in the layer picture"


def test_only_the_listed_entry_point_may_sit_beside_the_layers() -> None:
    assert _unplaced({"bayesact.pfn_train", "bayesact.models.pfn"}) == []
    assert _unplaced({"bayesact.train_everything"}) == ["train_everything"]


def test_a_foundation_is_imported_by_every_layer_and_imports_none() -> None:
    allowed = {"bayesact.infer.compiled": {"bayesact.compilation"},
               "bayesact.activations.fused": {"bayesact.compilation"}}
    assert _upward(allowed) == []
    assert _upward({"bayesact.compilation": {"bayesact.infer"}}) == ["bayesact.compilation -> bayesact.infer"]
    assert _upward({"bayesact.compile_packages": {"bayesact.compilation"}}) == []
    assert _upward({"bayesact.compilation": {"bayesact.compile_packages"}}) == [
        "bayesact.compilation -> bayesact.compile_packages"]
