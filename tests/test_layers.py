"""The dependency rule, checked on the source: every module of shared/, functions/ and function_app.py is
parsed with `ast`, and every import counts (module level, inside functions, under TYPE_CHECKING).

Imports point one way: shared.x509 <- shared.validation <- shared.exchange <- the layers that take ports (pipeline,
remediation, reconciliation, notify) <- the adapters <- shared.wiring, shared.cli, functions/. Only
shared.adapters.azure imports `azure.*` (functions/ and function_app.py only azure.functions), and no
import cycle joins our modules. A violation reads `a.b -> c.d (rule)`; a cycle `a -> b -> a (cycle)`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("shared", "functions", "function_app")
BASE = ("shared.errors", "shared.times")  # what every layer may import
PORT_LAYERS = ("shared.pipeline", "shared.remediation", "shared.reconciliation", "shared.notify")
ABOVE_PORTS = ("shared.adapters", "shared.wiring", "shared.cli", "shared.settings", "functions", "function_app")
ABOVE_ADAPTERS = ("shared.wiring", "shared.cli", "functions", "function_app")


def within(name: str, *packages: str) -> bool:
    """Whether the dotted `name` is one of `packages` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def modules(root: Path) -> dict[str, Path]:
    """Our modules under `root`: dotted name -> file (a package is its __init__.py)."""
    files = sorted((root / "shared").rglob("*.py")) + sorted((root / "functions").rglob("*.py"))
    if (root / "function_app.py").exists():
        files.append(root / "function_app.py")
    found = {}
    for path in files:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every module `name` imports, wherever the statement is: `from a import b` is a.b when that is one
    of our modules, else a; relative imports are resolved against `name`'s package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> every module it imports (ours and others)."""
    known = modules(root)
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def rule_broken(module: str, target: str) -> str | None:
    """The rule `module` breaks by importing `target`, or None."""
    if within(target, "azure"):
        if within(module, "shared.adapters.azure"):
            return None
        if within(module, "functions", "function_app"):
            return None if within(target, "azure.functions") else "functions import only azure.functions of azure"
        return "only shared.adapters.azure imports azure"
    if not within(target, *OURS) or target == module:
        return None
    if within(module, *BASE):
        return "errors and times import nothing of ours"
    if within(module, "shared.x509") and not within(target, "shared.x509", *BASE):
        return "x509 imports only errors and times"
    if within(module, "shared.validation") and not within(target, "shared.x509", "shared.validation", *BASE):
        return "validation imports only x509, errors and times"
    if within(module, "shared.exchange") and not within(
        target, "shared.x509", "shared.validation", "shared.exchange", *BASE
    ):
        return "exchange imports only x509, validation, errors and times"
    if within(module, *PORT_LAYERS) and within(target, *ABOVE_PORTS):
        return "layers take values and ports: no adapters, wiring, cli, settings or functions"
    if within(module, "shared.adapters") and within(target, *ABOVE_ADAPTERS):
        return "adapters never import wiring, cli or functions"
    if within(module, "functions", "function_app") and within(target, "shared.adapters"):
        return "functions wire through shared.wiring, never an adapter"
    return None


def violations(root: Path) -> list[str]:
    edges = graph(root)
    found = []
    for module in sorted(edges):
        for target in sorted(edges[module]):
            rule = rule_broken(module, target)
            if rule:
                found.append(f"{module} -> {target} ({rule})")
    return found


def cycles(root: Path) -> list[str]:
    """One path per strongly connected group of our modules (Tarjan), e.g. `a -> b -> a (cycle)`."""
    edges = graph(root)
    ours = {m: sorted(t for t in targets if t in edges) for m, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in ours[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in ours[node]:
                groups.append(sorted(group))

    for node in sorted(ours):
        if node not in index:
            connect(node)
    return sorted(" -> ".join(_path_back(group[0], set(group), ours)) + " (cycle)" for group in groups)


def _path_back(start: str, group: set[str], edges: dict[str, list[str]]) -> list[str]:
    """The shortest path from `start` back to itself inside `group` (breadth first)."""
    paths = [[start]]
    seen = set()
    while paths:
        path = paths.pop(0)
        for target in edges[path[-1]]:
            if target == start:
                return [*path, start]
            if target in group and target not in seen:
                seen.add(target)
                paths.append([*path, target])
    raise AssertionError(f"{start} is in a cycle without a path back to itself")


def test_the_scan_sees_every_kind_of_import():
    """Guards the scan: it must see imports inside functions and under TYPE_CHECKING, or the rules below
    would pass on a blind scan."""
    edges = graph(ROOT)
    assert len(edges) > 50 and {"function_app", "functions.pipeline", "shared.wiring"} <= set(edges)
    assert "shared.adapters.azure.keyvault" in edges["shared.wiring"]  # inside a function
    assert "shared.reconciliation.reconcile" in edges["shared.wiring"]  # also under TYPE_CHECKING
    assert "azure.storage.queue" in edges["shared.adapters.azure.queues"]  # under TYPE_CHECKING
    assert "shared.wiring" in edges["functions.pipeline"]  # inside the trigger


def test_imports_point_one_way():
    found = violations(ROOT)
    assert found == [], "imports pointing the wrong way:\n" + "\n".join(found)


def test_our_modules_import_no_cycle():
    found = cycles(ROOT)
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_checker_finds_a_planted_wrong_way_import_and_a_cycle(tmp_path):
    files = {
        "shared/__init__.py": "",
        "shared/errors.py": "",
        "shared/x509/__init__.py": "",
        "shared/x509/der.py": "from shared.errors import CertsyncError\n",
        "shared/x509/name.py": "def f():\n    from shared.adapters.azure import store\n",
        "shared/exchange/__init__.py": "",
        "shared/exchange/model.py": "from shared.x509 import der\nfrom shared.pipeline import a\n",
        "shared/pipeline/__init__.py": "",
        "shared/pipeline/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
        "shared/pipeline/b.py": "import shared.pipeline.c\n",
        "shared/pipeline/c.py": "from shared.pipeline import a\nimport azure.core\n",
        "shared/adapters/__init__.py": "",
        "shared/adapters/azure/__init__.py": "",
        "shared/adapters/azure/store.py": "import azure.data.tables\nfrom shared.x509 import der\n",
        "functions/__init__.py": "",
        "functions/t.py": "import azure.functions\nfrom shared.adapters.azure.store import x\n",
        "function_app.py": "import azure.functions\nimport functions.t\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "functions.t -> shared.adapters.azure.store (functions wire through shared.wiring, never an adapter)",
        "shared.exchange.model -> shared.pipeline.a (exchange imports only x509, validation, errors and times)",
        "shared.pipeline.c -> azure.core (only shared.adapters.azure imports azure)",
        "shared.x509.name -> shared.adapters.azure.store (x509 imports only errors and times)",
    ]
    assert cycles(tmp_path) == [
        "shared.pipeline.a -> shared.pipeline.b -> shared.pipeline.c -> shared.pipeline.a (cycle)"
    ]


def test_the_readme_layout_names_every_module_of_every_layer():
    # The Architecture section is where a newcomer finds their way; a module it does not name is a module they
    # cannot find. Each package row of its Layout table must name each of that package's modules.
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("### Layout") : readme.index("## Development")]
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2] for line in layout.splitlines() if line.startswith("| `")
    }
    missing = []
    for package in sorted(p for p in (ROOT / "shared").rglob("*") if p.is_dir() and (p / "__init__.py").exists()):
        key = f"{package.relative_to(ROOT).as_posix()}/"
        modules = sorted(m.name for m in package.glob("*.py") if m.name != "__init__.py")
        if key == "shared/":
            modules.append("cli/")
        row = rows.get(key)
        if modules and row is None:
            missing.append(f"{key} (no row)")
            continue
        missing += [f"{key}{m}" for m in modules if f"`{m}`" not in (row or "")]
    assert missing == [], "README's Layout table does not name: " + ", ".join(missing)
