"""The shape of the codebase (docs/architecture.md): short modules, no import cycles, no import against the
layer order, a light settings layer, and a README layout table and format table that match the tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "catalyst_deploy"
README = PACKAGE.parent / "README.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Package modules `path` imports anywhere (functions included), leaving out `if TYPE_CHECKING:` blocks."""
    return imports_in(path.read_text(), known) - {module_name(path)}


def imports_in(source: str, known: set[str]) -> set[str]:
    """The modules of `known` that `source` imports anywhere, leaving out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(source)
    skip = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"a relative import ({ast.unparse(node)}): the checks below only see absolute ones"
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


# The layers, top to bottom, as docs/architecture.md draws them: (layer, its top-level modules and folders of
# the package ("" is the package itself), the only lower layers it may import or None for every one). A module
# imports modules of its own layer and of the layers below it, never above; the interface reaches the rest
# through `api` (what it prints comes from `render`, what it parses from the settings layer).
LAYERS = (
    ("interface", ("cli", "__main__"), {"api", "render", "settings", "base"}),
    ("api", ("api",), None),
    ("run", ("run",), None),
    ("latency", ("latency",), None),
    ("methods", ("methods",), None),
    ("bench", ("bench",), None),
    ("exporters", ("exporters",), None),
    ("surgery", ("surgery",), None),
    ("inputs", ("inputs",), None),
    ("render", ("render",), None),
    ("settings", ("config", "settings", "formats", "method_table", "targets", "report"), None),
    ("base", ("errors", "atomic", ""), None),
)


def layer_of(module: str) -> int:
    """Index in LAYERS (0 = top) of a package module."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for index, (_, members, _) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{module} is in no layer: add its folder or module to LAYERS and docs/architecture.md")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import against LAYERS."""
    found = []
    for module, imported in graph.items():
        here = layer_of(module)
        name, _, reaches = LAYERS[here]
        for other in sorted(imported):
            there = layer_of(other)
            if there < here:
                found.append(f"{module} imports {other}: layer {LAYERS[there][0]} is above {name}")
            elif reaches is not None and there != here and LAYERS[there][0] not in reaches:
                found.append(f"{module} imports {other}: {name} imports only {', '.join(sorted(reaches))}")
    return sorted(found)


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    assert len(graph) > 60 and all(graph[m] for m in ("catalyst_deploy.cli", "catalyst_deploy.run.phases"))
    assert not layer_violations(graph), "\n".join(layer_violations(graph))


def test_the_layer_check_catches_planted_violations():
    graph = import_graph()

    def planted(module: str, imported: str) -> list[str]:
        return layer_violations({**graph, module: graph[module] | {imported}})

    assert planted("catalyst_deploy.surgery.graph", "catalyst_deploy.methods.catalyst") == [
        "catalyst_deploy.surgery.graph imports catalyst_deploy.methods.catalyst: layer methods is above surgery"]
    assert planted("catalyst_deploy.config", "catalyst_deploy.bench.backends") == [
        "catalyst_deploy.config imports catalyst_deploy.bench.backends: layer bench is above settings"]
    assert planted("catalyst_deploy.cli", "catalyst_deploy.run.rundir") == [
        "catalyst_deploy.cli imports catalyst_deploy.run.rundir: interface imports only api, base, render, settings"]
    assert planted("catalyst_deploy.run.phases", "catalyst_deploy.run.train") == []  # its own layer
    assert planted("catalyst_deploy.run.phases", "catalyst_deploy.errors") == []  # a lower one


def test_imports_inside_functions_count_and_type_checking_blocks_do_not():
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from catalyst_deploy.run.train import PhaseState
def later():
    from catalyst_deploy.bench import harness
"""
    known = {"catalyst_deploy.run.train", "catalyst_deploy.bench", "catalyst_deploy.bench.harness"}
    assert imports_in(source, known) == {"catalyst_deploy.bench", "catalyst_deploy.bench.harness"}


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert graph["catalyst_deploy.run.pipeline"], "the walk finds imports"
    assert not cycles(graph), cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["catalyst_deploy.config", "catalyst_deploy.cli", "catalyst_deploy.formats",
                                    "catalyst_deploy.methods"])
def test_the_settings_layer_and_the_cli_load_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'tensorrt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_layout_table_names_every_module():
    text = README.read_text()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent)
        folder = f"`{rel.parent.as_posix()}/`"
        if path.name == "__init__.py" and rel.parent.as_posix() != "catalyst_deploy":
            assert folder in text, folder
        elif path.name not in ("__init__.py", "__main__.py") and rel.parent.as_posix() == "catalyst_deploy":
            assert f"`{path.name[:-3]}`" in text or f"`{rel.as_posix()}`" in text, rel


def test_readme_format_table_is_the_format_table():
    from catalyst_deploy.formats import formats_markdown

    assert formats_markdown() in README.read_text()
