"""The package layout rules of docs/DESIGN.md, checked over optim/ (module- and function-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

OPTIM = Path(__file__).resolve().parents[2] / "optim"
MAX_LINES = 400
MAX_TOP_LEVEL = 10


def _module_name(path: Path) -> str:
    rel = path.relative_to(OPTIM.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in OPTIM.rglob("*.py")}


def _resolve(mod: str, level: int, here: str, is_pkg: bool) -> str:
    if level == 0:
        return mod
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([mod] if mod else []))


def import_edges() -> dict[str, set[str]]:
    """module -> optim modules it imports anywhere in its body (a submodule import counts as that module)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                if t in mods and t != name:
                    edges[name].add(t)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_find_cycles_reports_a_two_module_loop() -> None:
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_optim_has_no_import_cycles() -> None:
    cycles = find_cycles(import_edges())
    assert not cycles, cycles


def test_no_module_exceeds_the_line_limit() -> None:
    long = {str(p.relative_to(OPTIM)): n for p in OPTIM.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_optim_top_level_holds_few_modules() -> None:
    top = sorted(p.name for p in OPTIM.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_private_names_are_not_imported_across_modules() -> None:
    bad = []
    for path in OPTIM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optim"):
                bad += [f"{path.relative_to(OPTIM)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad


def test_engine_never_imports_streamlit() -> None:
    users = [str(p.relative_to(OPTIM)) for p in OPTIM.rglob("*.py")
             if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "streamlit" in ast.unparse(n)
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert not users, users


# Tests mirror the packages: tests/<package>/test_*.py for each optim package; `app` holds the dashboard
# (app.py, app_pages/, ui/), `project` the whole-repo checks, `corpus` the real models nobody here wrote.
NON_PACKAGE_TEST_FOLDERS = {"app", "project", "corpus"}


def test_tests_mirror_the_packages() -> None:
    tests = OPTIM.parent / "tests"
    packages = {p.name for p in OPTIM.iterdir() if (p / "__init__.py").is_file()}
    assert not list(tests.glob("test_*.py")), "put each test file in tests/<package>/"
    folders = {p.parent.name for p in tests.glob("*/test_*.py")}
    assert folders <= packages | NON_PACKAGE_TEST_FOLDERS, folders - packages - NON_PACKAGE_TEST_FOLDERS
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "test file names must be unique across folders (rootdir imports)"


# Layers look down, never up (module- and function-level imports alike). `jobs` is the process layer: its
# limits are used by the sandbox (io), its task table reaches every layer, so only the upper layers use it.
UPPER = {"analysis", "sweep", "present", "api", "cli"}
FORBIDDEN = {
    "io": UPPER | {"graph", "measure", "passes", "hardware", "reference"},
    "graph": UPPER | {"measure", "passes", "hardware", "jobs"},
    "measure": UPPER | {"passes", "hardware", "jobs"},
    "passes": UPPER | {"jobs"},
    "hardware": UPPER | {"jobs"},
    "analysis": UPPER - {"analysis"} | {"jobs"},
    "sweep": {"present", "api", "cli"},
    "present": {"api", "cli", "jobs"},
}


def test_layers_never_import_upward() -> None:
    bad = sorted((src, dst) for src, dsts in import_edges().items() for dst in dsts
                 if src.count(".") >= 1 and dst.count(".") >= 1
                 and dst.split(".")[1] in FORBIDDEN.get(src.split(".")[1], set()))
    assert not bad, bad
