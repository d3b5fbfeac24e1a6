"""The house: the top-level packages form no circle, and every import runs down the layers of the contract.

The layers are the import-linter ``layers`` contract in pyproject.toml, one line per folder. This test
reads them and checks the package graph itself (every import, function-level ones too), so a package
missing from the contract, a circle between two packages, or an import that runs back up a floor fails
here with the modules that do it. ``python -m tests.test_layers`` prints the house.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import grimp

ROOT = Path(__file__).resolve().parents[1]
Edge = tuple[str, str]


def _config() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["importlinter"]
    return config


def floors() -> list[list[str]]:
    """The layers contract, top floor first: each floor's packages (``a | b`` or ``a : b`` share one)."""
    (layers,) = [c["layers"] for c in _config()["contracts"] if c["type"] == "layers"]
    return [[name.strip() for name in line.replace(":", "|").split("|")] for line in layers]


def packages() -> list[str]:
    """The project's top-level packages (the contract's root packages)."""
    return list(_config()["root_packages"])


@cache
def package_imports() -> dict[Edge, list[Edge]]:
    """(importing package, imported package) -> the module imports behind it."""
    roots = packages()
    graph = grimp.build_graph(*roots, cache_dir=None)
    edges: dict[Edge, list[Edge]] = defaultdict(list)
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            a, b = module.split(".")[0], imported.split(".")[0]
            if a != b and b in roots:
                edges[(a, b)].append((module, imported))
    return dict(edges)


def circles() -> list[list[str]]:
    """Groups of packages that reach each other through imports (strongly connected, more than one)."""
    succ: dict[str, set[str]] = defaultdict(set)
    for a, b in package_imports():
        succ[a].add(b)

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in succ[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reached = {p: reach(p) for p in packages()}
    groups = {frozenset(q for q in packages() if q in reached[p] and p in reached[q]) | {p}
              for p in packages() if p in reached[p]}
    return sorted(sorted(g) for g in groups)


def upward() -> list[tuple[Edge, list[Edge]]]:
    """Imports of a package on its own floor or one above it (a floor's packages never import each other)."""
    floor_of = {name: i for i, names in enumerate(floors()) for name in names}
    return sorted((edge, mods) for edge, mods in package_imports().items()
                  if floor_of.get(edge[0], -1) >= floor_of.get(edge[1], len(floor_of)))


def house() -> str:
    """The floors, top first, and each package's imports: what a reviewer reads."""
    lines = [" > ".join(" | ".join(names) for names in floors())]
    for (a, b), mods in sorted(package_imports().items()):
        lines.append(f"  {a} -> {b} ({len(mods)}, e.g. {mods[0][0]} -> {mods[0][1]})")
    lines.append(f"circles: {circles() or 'none'}")
    lines.append("upward: " + (", ".join(f"{a} -> {b} ({m[0][0]} -> {m[0][1]})" for (a, b), m in upward())
                               or "none"))
    return "\n".join(lines)


def test_every_package_has_one_floor() -> None:
    placed = [name for names in floors() for name in names]
    assert sorted(placed) == sorted(packages()), "each top-level package on exactly one floor of the contract"
    assert all("." not in name for name in placed), "floors are folders, not modules (no `stayler.x` sub-layers)"


def test_no_circle_between_packages() -> None:
    assert circles() == [], house()


def test_no_import_runs_back_up_a_floor() -> None:
    assert upward() == [], house()


if __name__ == "__main__":
    print(house())
