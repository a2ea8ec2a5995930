"""The package's import structure, read from the source with ``ast`` (nothing of it is imported).

DESIGN.md, "Dependencies run one way": stages import the shared layers below them and never each
other; the shared layers never import a stage; ``utils`` sits at the bottom. And no module takes
part in an import cycle.

An edge is every ``import``/``from ... import`` statement anywhere in a module (top level, inside
functions, under ``if TYPE_CHECKING``) and every ``importlib.import_module("instructrl...")`` with a
literal name. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``; a package's ``__init__`` is the module ``pkg``. Parent packages that Python runs on the way
to a module are not edges of their own (they would make every ``__init__`` part of a cycle).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "instructrl"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE

# a module's unit is the first name under instructrl/ (instructrl.ppo.train -> "ppo"); the package
# root's own __init__ is the unit "" (it holds the version)
STAGES = {"sft", "rm", "ppo", "eval", "label", "serve", "data", "pipeline"}
SHARED = {"models", "text", "web", "builtin", "records", "config", "utils", "cli", ""}
STAGE_EDGES_ALLOWED = {("eval", "label")}  # evaluation uses the labelers as judges
UTILS_MAY_IMPORT = {"utils", "config", "records", ""}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    path: str  # file of the importing module, relative to src/
    line: int
    lazy: bool  # inside a function body (or a class body inside one)
    text: str  # the import statement as written

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.source} -> {self.target}  ({self.text})"


def module_files(src: Path) -> tuple[dict[str, Path], list[str]]:
    """Module name -> file for every .py under ``src`` (the package directory), and the names that two
    files claim (``x.py`` beside a package ``x/``: Python imports the package, the file is dead)."""
    modules: dict[str, Path] = {}
    clashes = []
    for f in sorted(src.rglob("*.py")):
        parts = [src.name, *f.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name in modules:
            package, single = sorted([f, modules[name]], key=lambda p: p.name != "__init__.py")
            clashes.append(
                f"{single.relative_to(src.parent)} is shadowed by the package {package.parent.relative_to(src.parent)}/"
            )
            modules[name] = package
        else:
            modules[name] = f
    return modules, clashes


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` starts with (``a.b.func`` -> ``a.b``), None if outside."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def lazy_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes that sit inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def imports_of(module: str, path: Path, modules: dict[str, Path], src: Path) -> list[Edge]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    lines = source.splitlines()
    lazy = lazy_nodes(tree)
    is_package = path.name == "__init__.py"
    rel = str(path.relative_to(src.parent))
    edges = []

    def add(node: ast.AST, target: str | None) -> None:
        # one edge per statement and target (`from m import a, b` is one edge to m)
        if target is not None and target != module and (target, node.lineno) not in {(e.target, e.line) for e in edges}:
            edges.append(Edge(module, target, rel, node.lineno, id(node) in lazy, lines[node.lineno - 1].strip()))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, resolve(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, then one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(node, submodule if submodule in modules else resolve(base, modules))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node, resolve(node.args[0].value, modules))
    return edges


def package_edges(src: Path = SRC) -> tuple[dict[str, Path], list[Edge], list[str]]:
    modules, clashes = module_files(src)
    edges = [e for name, path in modules.items() for e in imports_of(name, path, modules, src)]
    return modules, edges, clashes


def layer_offense(edge: Edge) -> str | None:
    """Why an edge breaks the layering, or None when it is allowed."""
    src, dst = unit_of(edge.source), unit_of(edge.target)
    if src == dst:
        return None
    if src == "cli":  # the command line dispatches to every stage, but only when one runs
        return None if edge.lazy or dst not in STAGES else "cli imports a stage at import time"
    if src == "pipeline":  # the top: it runs every stage
        return None
    if src in STAGES and dst in STAGES:
        return None if (src, dst) in STAGE_EDGES_ALLOWED else f"stage {src} imports stage {dst}"
    if src in SHARED and dst in STAGES:
        return f"shared layer {src or PACKAGE} imports stage {dst}"
    if src == "utils" and dst not in UTILS_MAY_IMPORT:
        return f"utils imports {dst}"
    return None


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle, as a list of edges, per strongly connected component of more than one module."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    # Tarjan's algorithm, iterative (the recursion limit is not a concern for a test, but a deep
    # package should not make it one)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(set(component))
    found = []
    for component in components:
        # the shortest way back to the component's first module, by breadth-first search inside it
        start = min(component)
        back: dict[str, Edge] = {}
        frontier = [start]
        while frontier and start not in back:
            nxt = []
            for node in frontier:
                for target, edge in sorted(graph[node].items()):
                    if target in component and target not in back:
                        back[target] = edge
                        nxt.append(target)
            frontier = nxt
        path, node = [], start
        while True:
            path.append(back[node])
            node = back[node].source
            if node == start:
                break
        found.append(path[::-1])
    return sorted(found, key=lambda c: c[0].source)


def format_cycle(cycle: list[Edge]) -> str:
    names = " -> ".join([cycle[0].source, *(e.target for e in cycle)])
    return names + "".join(f"\n      {e}" for e in cycle)


# ---------------------------------------------------------------------------------- the reader itself


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / PACKAGE


def test_reader_finds_every_kind_of_import(tmp_path):
    src = write_tree(
        tmp_path,
        {
            "__init__.py": "",
            "ppo/__init__.py": "",
            "ppo/train.py": (
                "from typing import TYPE_CHECKING\n"
                "from instructrl.ppo import loss\n"  # a submodule named in `from pkg import name`
                "from . import reward\n"
                "from .loss import policy_loss\n"
                "if TYPE_CHECKING:\n"
                "    from instructrl.rm.model import RM\n"
                "def run():\n"
                "    import instructrl.sft.data as sft_data\n"
                "    importlib.import_module('instructrl.eval.run')\n"
            ),
            "ppo/loss.py": "import torch\nfrom instructrl.ppo import train\n",
            "ppo/reward.py": "from instructrl.ppo import helper_name\n",  # a name in the package's __init__
            "rm/__init__.py": "",
            "rm/model.py": "",
            "sft/__init__.py": "",
            "sft/data.py": "",
            "eval/__init__.py": "",
            "eval/run.py": "",
        },
    )
    modules, edges, clashes = package_edges(src)
    got = {(e.source, e.target, e.line, e.lazy) for e in edges}
    assert got == {
        ("instructrl.ppo.train", "instructrl.ppo.loss", 2, False),
        ("instructrl.ppo.train", "instructrl.ppo.reward", 3, False),
        ("instructrl.ppo.train", "instructrl.ppo.loss", 4, False),
        ("instructrl.ppo.train", "instructrl.rm.model", 6, False),
        ("instructrl.ppo.train", "instructrl.sft.data", 8, True),
        ("instructrl.ppo.train", "instructrl.eval.run", 9, True),
        ("instructrl.ppo.loss", "instructrl.ppo.train", 2, False),
        ("instructrl.ppo.reward", "instructrl.ppo", 1, False),
    }
    assert clashes == []
    offenses = sorted(f"{layer_offense(e)}" for e in edges if layer_offense(e))
    assert offenses == ["stage ppo imports stage eval", "stage ppo imports stage rm", "stage ppo imports stage sft"]
    (found,) = cycles(edges)
    assert [(e.source, e.target) for e in found] == [
        ("instructrl.ppo.loss", "instructrl.ppo.train"),
        ("instructrl.ppo.train", "instructrl.ppo.loss"),
    ]


def test_reader_layer_rules_and_clashes(tmp_path):
    src = write_tree(
        tmp_path,
        {
            "__init__.py": "",
            "cli.py": "import instructrl.sft.train\ndef main():\n    from instructrl.ppo import train\n",
            "utils/__init__.py": "",
            "utils/run.py": "from instructrl.models.checkpoint import x\nfrom instructrl import config\n",
            "models/__init__.py": "",
            "models/checkpoint.py": "from ..utils import run\n",
            "config.py": "",
            "eval/__init__.py": "",
            "eval/judge.py": "from instructrl.label import labeler\n",
            "label/__init__.py": "",
            "label/labeler.py": "from instructrl.eval import judge\n",
            "pipeline.py": "",
            "pipeline/__init__.py": "from instructrl.sft import train\n",
            "sft/__init__.py": "",
            "sft/train.py": "",
            "ppo/__init__.py": "",
            "ppo/train.py": "",
        },
    )
    _, edges, clashes = package_edges(src)
    offenses = sorted(f"{e.path}:{e.line} {layer_offense(e)}" for e in edges if layer_offense(e))
    assert offenses == [
        "instructrl/cli.py:1 cli imports a stage at import time",
        "instructrl/label/labeler.py:1 stage label imports stage eval",
        "instructrl/utils/run.py:1 utils imports models",
    ]
    assert clashes == ["instructrl/pipeline.py is shadowed by the package instructrl/pipeline/"]
    assert sorted(" ".join(e.target for e in c) for c in cycles(edges)) == [
        "instructrl.label.labeler instructrl.eval.judge",
        "instructrl.utils.run instructrl.models.checkpoint",
    ]


# ---------------------------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, Path], list[Edge], list[str]]:
    return package_edges(SRC)


def test_every_folder_is_a_stage_or_a_shared_layer(package):
    modules, _, _ = package
    unknown = sorted({unit_of(m) for m in modules} - STAGES - SHARED)
    assert not unknown, f"classify these in tests/unit/test_architecture.py (STAGES or SHARED): {unknown}"


def test_stages_import_only_shared_layers(package):
    _, edges, clashes = package
    problems = clashes + [f"{layer_offense(e)}: {e}" for e in edges if layer_offense(e)]
    if problems:
        pytest.fail(f"{len(problems)} layering problems:\n" + "\n".join(problems), pytrace=False)


def test_no_import_cycles(package):
    _, edges, _ = package
    found = cycles(edges)
    if found:
        pytest.fail(f"{len(found)} import cycles:\n" + "\n".join(format_cycle(c) for c in found), pytrace=False)
