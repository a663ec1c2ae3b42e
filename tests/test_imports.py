"""The package's shape: every module imports on its own, and module-level imports form no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "mrc"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def module_level_imports(path: Path) -> set[str]:
    """The mrc modules a module imports when it is imported (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            # `from mrc import dist` imports the submodule: the package's __init__ (which re-exports
            # the API and so imports much of the package) is no edge unless a name comes from it.
            if not all(n in MODULES for n in names):
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES)
    return found


def test_module_level_imports_have_no_cycle():
    graph = {name: module_level_imports(path) - {name} for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


# A `__main__` module runs its program when imported; it is checked by the cycle test only.
IMPORTABLE = sorted(name for name in MODULES if not name.endswith("__main__"))


@pytest.mark.parametrize("name", IMPORTABLE)
def test_every_module_imports_alone_in_a_fresh_process(name):
    done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_top_level_module_named_like_a_popular_package():
    """Only `mrc` is installed: a top-level `kernels` package would collide with PyPI's `kernels`."""
    setup = (REPO / "setup.cfg").read_text(encoding="utf-8")
    include = setup.split("[options.packages.find]")[1].split("[")[0]
    assert [line.strip() for line in include.splitlines()[1:] if line.strip()] == ["include =", "mrc", "mrc.*"]
