"""The shape of the codebase (docs/architecture.md): short modules, no import cycles, a light settings layer,
and a README layout table and format table that match the tree."""

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
    tree = ast.parse(path.read_text())
    skip = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found - {module_name(path)}


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
