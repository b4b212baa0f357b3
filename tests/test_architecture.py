"""The import graph of ``sdlaws/`` has no cycles and no back-arrows: a module imports its own layer or lower ones,
never a higher one (docs/architecture.md). Imports inside functions count too: a lazy import is still a
dependency."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sdlaws"

#: Layers, lowest first (prefixes of module names); docs/architecture.md draws them.
LAYERS = (
    ("sdlaws", "sdlaws.errors", "sdlaws.schema", "sdlaws.shapes", "sdlaws.dtypes",        # words and facts
     "sdlaws.provenance", "sdlaws.formatting"),
    ("sdlaws.rates", "sdlaws.io", "sdlaws.hardware", "sdlaws.defects"),                   # tables and GPU profiles
    ("sdlaws.fit", "sdlaws.roofline", "sdlaws.calibration", "sdlaws.plotting"),           # laws and the roofline
    ("sdlaws.measure", "sdlaws.plan", "sdlaws.ingest"),                                   # measuring, importing, planning
    ("sdlaws.train",),                                                                    # training drafts
    ("sdlaws.experiments",),                                                              # experiments, documents
    ("sdlaws.cli", "sdlaws.__main__"),                                                    # the command line
)
#: The floor: the CSV contract and the rates never depend on what reads or writes them.
FLOOR = ("sdlaws.schema", "sdlaws.rates", "sdlaws.io", "sdlaws.errors")
UPPER = ("sdlaws.fit", "sdlaws.plan", "sdlaws.measure", "sdlaws.experiments", "sdlaws.cli")


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The package module a dotted import name refers to (``sdlaws.fit.fit_law`` -> ``sdlaws.fit``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """Package modules ``module`` imports anywhere in its file (relative imports resolved)."""
    path, found = MODULES[module], set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(stem + ([base] if base else []))
            # ``from pkg import sub`` depends on the submodule; ``from pkg import name`` on the package
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {o for o in map(_owner, found) if o and o != module}


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
    """Index of the layer of the longest prefix that names ``module``."""
    best = max(((len(p), i) for i, layer in enumerate(LAYERS) for p in layer
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} is in no layer; add it to LAYERS and docs/architecture.md"
    return best[1]


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_module_imports_a_higher_layer():
    back = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps if _layer(d) > _layer(m))
    assert not back, "back-arrows (a lower layer importing a higher one):\n" + "\n".join(back)


def test_the_floor_imports_nothing_above_it():
    floor = {m: d for m, d in GRAPH.items() if m.startswith(FLOOR)}
    assert floor and not any(dep.startswith(UPPER) for deps in floor.values() for dep in deps)


def test_import_graph_has_no_cycles():
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_graph_holds_known_edges_and_ordered_layers():
    """The checks above run on the package's real imports: known edges are found and the layers are ordered."""
    assert "sdlaws.errors" in GRAPH["sdlaws.rates"]
    assert "sdlaws.plan.validate" in GRAPH["sdlaws.experiments.reporting"]   # a lazy import inside a function
    assert _layer("sdlaws.cli.plan") > _layer("sdlaws.plan.cost") > _layer("sdlaws.fit.laws") > _layer("sdlaws.io")
