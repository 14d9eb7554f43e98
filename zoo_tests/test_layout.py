"""The architecture we keep, checked on the source: no import cycles, the core knows no
family, the library never imports the command lines (convert/) or the benchmarks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_SOURCES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from zoo import nn` imports zoo.nn, not the facade
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in _SOURCES else node.module)
    return found


ENTRY_POINTS = {"zoo.cli", "zoo.__main__", "zoo.experiment"}  # programs that use the library
MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def test_the_library_never_imports_convert_or_benchmarks():
    offenders = {name: sorted(m for m in _imports(path)
                              if m.split(".")[0] in ("convert", "benchmarks", "zoo_tests"))
                 for name, path in MODULES.items()}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_import_cycles():
    """Depth-first search over zoo's import graph (lazy imports count too). The package
    facade ``zoo`` (``zoo/__init__.py``) may import anything, nothing may import it."""
    entry_points = ENTRY_POINTS
    assert not GRAPH["zoo"] & entry_points
    importers_of_facade = sorted(n for n, deps in GRAPH.items()
                                 if "zoo" in deps and n != "zoo" and n not in entry_points)
    assert importers_of_facade == [], f"modules importing the zoo facade: {importers_of_facade}"
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node] - {"zoo"}):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep] if dep in stack else [node, dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state and name != "zoo":
            visit(name, [name])


def test_the_core_knows_no_family():
    """Only the families' own folders and the one registration list name a family."""
    allowed = {"zoo", "zoo.models", *ENTRY_POINTS}
    core = {n: deps for n, deps in GRAPH.items()
            if not n.startswith("zoo.models.") and n not in allowed}
    offenders = {n: sorted(d for d in deps if d.startswith("zoo.models."))
                 for n, deps in core.items()}
    assert not {k: v for k, v in offenders.items() if v}
    for name, path in MODULES.items():
        if name in core:
            # The HF layer reads HF's file formats, but names no architecture either.
            formats = () if name.startswith("zoo.hf") else ("safetensors", "pytorch_model")
            for word in ("haiku", "bert", "roberta", "deberta", "modernbert", *formats):
                hits = [t for t in _code_words(path) if re.search(rf"\b{word}\b", t.lower())]
                assert not hits, f"{path.relative_to(ROOT)} names {word!r} in code: {hits[:3]}"


def _code_words(path: Path) -> list[str]:
    """Identifiers and string literals of a module, without docstrings (docs may explain)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                    ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            words.append(node.value)
        elif isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
    return words


# Declared exceptions (family -> families it may import); none today: what families share
# (the post-LN block of BERT and RoBERTa) lives in zoo.nn.
BUILDS_ON: dict[str, set[str]] = {}


def test_families_do_not_import_each_other():
    for name, deps in GRAPH.items():
        if name.startswith("zoo.models."):
            family = name.split(".")[2]
            others = [d for d in deps if d.startswith("zoo.models.")
                      and d.split(".")[2] != family
                      and d.split(".")[2] not in BUILDS_ON.get(family, ())]
            assert not others, f"{name} imports another family: {others}"


def test_the_core_never_switches_on_a_task_name():
    """Tasks own what differs between them: outside ``zoo/tasks/`` no code compares a value
    with a task's name (``kind == "classification"``, ``in ("mlm", ...)``); it asks the task."""
    from zoo.tasks import task_names

    names = set(task_names())
    offenders = []
    for name, path in MODULES.items():
        if name.startswith(("zoo.tasks", "zoo.models.")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) \
                    else [side]
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"comparisons with a task name: {offenders}"
