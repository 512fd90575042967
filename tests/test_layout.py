"""The package's shape: no import cycles among lmcli's modules (what each imports when it is
imported, not what its functions import when called), and the CPU sampling path free of torch."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmcli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules imported at import time: module-level statements, not TYPE_CHECKING blocks."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else []:
            if isinstance(inner, ast.Import):
                found |= {alias.name for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                found.add(inner.module)
                found |= {f"{inner.module}.{alias.name}" for alias in inner.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in top_level_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_no_import_cycles() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for target in sorted(edges[node]):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def test_the_cpu_sampling_path_imports_no_torch_when_imported() -> None:
    edges = graph()
    seen, stack = set(), ["lmcli.sampling.open", "lmcli.cli.sample"]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        path = PACKAGE.parent / (node.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / node.replace(".", "/") / "__init__.py"
        assert "torch" not in {m.split(".")[0] for m in top_level_imports(path)}, node
        stack.extend(edges[node])
