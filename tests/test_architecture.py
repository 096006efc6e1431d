"""The house's rules, read off the source: imports point down (no circles), only the engine mapping
reads a backend's name, and the network and the engines stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import xpnet

PACKAGE = Path(xpnet.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The xpnet modules ``name`` imports anywhere: at load, for type checking or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            # a package's own __init__ importing its submodules is how packages load, not a circle
            if node.startswith(nxt + ".") and modules[nxt].name == "__init__.py":
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_only_the_engine_mapping_reads_backend_names():
    pattern = re.compile(r"""name\s*(==|!=)\s*["'](numpy|jax|torch|cupy|array_api_strict)["']""")
    offenders = []
    for folder in ("train", "nn", "optim", "data"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_the_network_and_each_engine_module_stay_under_400_lines():
    paths = [PACKAGE / "train" / "network.py", *sorted((PACKAGE / "engine").glob("*.py"))]
    long = {p.name: n for p in paths if (n := len(p.read_text().splitlines())) >= 400}
    assert not long, long
