"""The package layout holds: no import cycles, and each package imports only what its place
allows (models/ never streams/; the wire contracts nothing of the workers; the stream worker and
the embed worker not each other). Read from the code's own imports, nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "models")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """``{module: project modules it imports}``, type-checking-only imports included (a cycle
    there still ties the modules together for a reader)."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module]
                found += [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            targets |= {m for m in found if m in modules and m != name}
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules; a module importing through its own package's
    ``__init__`` counts (that ``__init__`` imports its modules back)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles() -> None:
    assert _cycle(_imports()) is None


def test_each_package_imports_only_what_its_place_allows() -> None:
    forbidden = {
        "models": ("streams",),
        "streams.contracts": ("streams.stream", "streams.embed", "streams.cli"),
        "streams.stream": ("streams.embed",),
        "streams.embed": ("streams.stream",),
    }
    broken = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        for target in targets
        for owner, banned in forbidden.items()
        if (module == owner or module.startswith(owner + "."))
        and any(target == b or target.startswith(b + ".") for b in banned)
    ]
    assert broken == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": set()}
    assert _cycle(graph) == ["a.x", "a.y", "a.z", "a.x"]


def test_every_module_is_in_the_architecture_page() -> None:
    """docs/ARCHITECTURE.md's module tables name every module of streams/ and models/."""
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [
        str(p.relative_to(ROOT))
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if p.name != "__init__.py" and f"`{p.relative_to(ROOT)}`" not in page
    ]
    assert missing == []


def test_no_product_function_is_over_60_lines() -> None:
    """A function a reader takes in at once; longer ones are split into named steps."""
    long = [
        f"{p.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []
