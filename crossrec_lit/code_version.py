"""Which of the package's source files can change a trained result: part of the key under which
the experiment runner caches a trial.

A trial is reused only while the code that trained it is unchanged. Hashing the whole package
made every edit, even one to a model the trial never imports, retrain every cached trial: hours of
CPU for the book's real-data chapters, each time any model changed. Here a trial's code is the
runner's own modules plus the modules its model, DataModule and callbacks import, followed through
``crossrec_lit`` imports as written in the source (``import`` statements inside functions count
too), so a model's edit retrains that model's trials and whatever imports it, and nothing else.
A package's ``__init__`` re-exports are followed to the module that defines the name:
``from crossrec_lit.models.base import X`` and ``from crossrec_lit.models import BPRMF`` depend on
base.py and mf.py, not on every model the ``models`` package lists.

A file counts by its code, not its text: the hash reads the syntax tree with docstrings removed, so
an edit to a comment, a docstring or the layout keeps every cached trial; an edit to what runs
retrains. Python's own ``modulefinder`` follows imports too, but it resolves a package import to the
package's ``__init__``, which here re-exports every model, so each trial would again depend on all.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "crossrec_lit"
ROOT = Path(__file__).resolve().parent

# modules that only format or report results: editing them must not invalidate trained trials
REPORTING_ONLY = {"evaluation/stats.py", "reporting.py", "plotting.py", "cli.py", "diagnosis.py"}
# the runner builds, seeds, prunes and checkpoints every trial: its modules are in every trial's code
RUNNER = ("crossrec_lit.experiment", "crossrec_lit.search", "crossrec_lit.training", "crossrec_lit.runtime", "crossrec_lit.config", "crossrec_lit.trial_pool")


def module_file(name: str) -> Path | None:
    """The source file of ``crossrec_lit.a.b`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    base = ROOT.joinpath(*parts) if parts else ROOT
    if base.with_suffix(".py").is_file() and parts:
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _is_package(name: str) -> bool:
    path = module_file(name)
    return path is not None and path.name == "__init__.py"


def _parse(path: Path) -> ast.Module:
    stat = path.stat()  # keyed on the file's state: an edited file is parsed again
    return _parse_version(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _parse_version(path: Path, mtime_ns: int, size: int) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@lru_cache(maxsize=256)
def _code(path: Path, mtime_ns: int, size: int) -> bytes:
    """What of a file can change a result: its syntax tree without docstrings or positions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))  # a fresh tree: this one is edited
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def _absolute(module: str | None, level: int, importer: str) -> str:
    if not level:
        return module or ""
    package = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def _defining(module: str, name: str, seen: frozenset = frozenset()) -> str:
    """The module that defines ``name`` as ``module`` exports it: a package's re-export is
    followed to its source; a name a package defines itself is the package's."""
    if _is_package(f"{module}.{name}") or module_file(f"{module}.{name}") is not None:
        return f"{module}.{name}"
    if not _is_package(module) or (module, name) in seen:
        return module
    for node in _parse(module_file(module)).body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _absolute(node.module, node.level, module)
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            if module_file(source) is not None:
                return _defining(source, original, seen | {(module, name)})
    return module


def imports(module: str) -> set[str]:
    """The ``crossrec_lit`` modules ``module``'s source imports, anywhere in the file."""
    path = module_file(module)
    if path is None:
        return set()
    found = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if module_file(a.name) is not None}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, module)
            if module_file(source) is not None:
                found |= {_defining(source, a.name) for a in node.names if a.name != "*"}
    return found


def closure(modules) -> set[Path]:
    """Source files of ``modules`` and of every ``crossrec_lit`` module they import, transitively
    (reporting-only modules left out)."""
    files, todo, seen = set(), list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None or path.relative_to(ROOT).as_posix() in REPORTING_ONLY:
            continue
        files.add(path)
        todo.extend(imports(name))
    return files


def code_version(class_paths=()) -> str:
    """Hash of the source files that can change the result of a trial of these classes (model,
    DataModule, callbacks: ``crossrec_lit.models.BPRMF`` and the like): the runner's modules and
    everything the classes' modules import. Classes from outside the package add nothing: their
    code is the user's, as is its version."""
    modules = list(RUNNER)
    for class_path in class_paths:
        module, _, name = str(class_path).rpartition(".")
        if module_file(module) is not None:
            modules.append(_defining(module, name))
    digest = hashlib.sha256()
    for path in sorted(closure(modules)):
        rel = path.relative_to(ROOT).as_posix()
        digest.update(rel.encode())
        stat = path.stat()
        digest.update(_code(path, stat.st_mtime_ns, stat.st_size))
    return digest.hexdigest()[:16]
