"""A module's code dependencies within the project, derived from its imports.

A stage's cache key and its dvc.yaml `deps` cover the source of every project module the stage
can run: the stage module, what it imports (at the top or inside functions, under any
condition), what those import, and the packages' `__init__` files that importing them runs.
Derived from the source, never listed by hand, so a new import cannot be missed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT_PACKAGE = "rlhf"
# the rlhf package's folder: the repository root in a checkout, site-packages/rlhf installed
PACKAGE_DIR = Path(__file__).resolve().parents[2]


@cache
def top_packages() -> tuple[str, ...]:
    """The folders of PACKAGE_DIR that are rlhf's subpackages (core, tasks, ...): those that
    import as rlhf.<folder> from there. Derived, so no list of them is kept by hand."""
    return tuple(
        sorted(
            folder.name
            for folder in PACKAGE_DIR.iterdir()
            if (folder / "__init__.py").is_file()
            and module_file(f"{ROOT_PACKAGE}.{folder.name}") == folder / "__init__.py"
        )
    )


def module_file(name: str) -> Path | None:
    """The source file of a project module, or None if `name` is no module (an object)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every name an import statement in `source` can bring in, resolved to absolute form:
    for `from a import b`, both `a` and `a.b` (b may be a submodule)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def with_parents(name: str) -> list[str]:
    """A module and the packages above it, whose __init__ files importing it runs."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def code_deps(*roots: str) -> tuple[str, ...]:
    """The project modules `roots` can import, themselves included, sorted."""
    seen: set[str] = set()
    todo = [m for root in roots for m in with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen or not (name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + ".")):
            continue
        path = module_file(name)
        if path is None or path.suffix != ".py":
            continue  # an object imported from a module, or the namespace root
        seen.add(name)
        found = imported_names(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
        todo.extend(m for n in found for m in with_parents(n))
    return tuple(sorted(seen))


def source_file(module: str) -> Path:
    """The source file of a project module that exists (one code_deps returned)."""
    path = module_file(module)
    assert path is not None, module
    return path


def source_path(module: str) -> str:
    """Where a module's source sits relative to the package root ("tasks/sft.py"): the same
    path in a checkout (the repository root) and in an installed package (site-packages/rlhf)."""
    return source_file(module).resolve().relative_to(PACKAGE_DIR).as_posix()


def is_ours(module: str) -> bool:
    return module == ROOT_PACKAGE or module.startswith(ROOT_PACKAGE + ".")


@contextlib.contextmanager
def importable(root: Path) -> Iterator[None]:
    """The project's own modules importable while the block runs (root first on sys.path)."""
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(root))


def local_files(module: str, root: Path) -> list[Path]:
    """The source files a module named in the settings runs: the project's own (own_modules)
    and those of every rlhf module they import."""
    files, package = own_modules(module, root)
    return sorted({*files, *(source_file(m).resolve() for m in code_deps(*package))})


def own_modules(module: str, root: Path) -> tuple[list[Path], list[str]]:
    """What a module named in the settings runs: the project's own files (it and the project
    modules it imports: files under root, outside any virtualenv) and the rlhf modules they
    import (for one of rlhf's: none, and itself). Nothing for a module that is not found."""
    root = root.resolve()
    files: set[Path] = set()
    package: set[str] = set()
    with importable(root):
        seen, todo = set(), [module]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if is_ours(name):
                package.add(name)
                continue
            path = module_file(name)
            if path is None or path.suffix != ".py" or not in_project(path, root):
                continue
            files.add(path.resolve())
            found = imported_names(
                path.read_text(encoding="utf-8"), name, path.name == "__init__.py"
            )
            todo.extend(m for n in found for m in with_parents(n))
    return sorted(files), sorted(package)


def in_project(path: Path, root: Path) -> bool:
    path = path.resolve()
    return path.is_relative_to(root) and "site-packages" not in path.parts
