"""What the docs and the code's comments name exists: repository paths, rlhf modules and their
objects, settings keys, commands, registered models and the stage context's methods."""

import ast
import importlib
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import Settings, known_keys, section_names
from rlhf.flows.cli import build_parser
from rlhf.flows.reference import subcommands
from rlhf.tasks import STAGES
from tests.support.project import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted(
    p
    for folder in ("core", "tasks", "flows", "models", "demo", "tests", "benchmarks")
    for p in (ROOT / folder).rglob("*.py")
)
TEXTS = [*DOCS, *SOURCES, ROOT / "Makefile", ROOT / ".ci/run", ROOT / ".ci/typecheck"]

# a path with a placeholder (`tests/tasks/test_<name>.py`) or in an ignored folder is not checked
PATH = re.compile(
    r"(?<![\w./<>-])((?:core|tasks|flows|models|demo|tests|benchmarks|docs|\.ci)/[\w./<>-]*[\w>])"
)
MODULE = re.compile(r"(?<![\w.])rlhf\.(?:core|tasks|flows|models|demo)(?:\.\w+)*")
# `section.key`, but not a file name (`mlflow.db`) or a registry tag (tag `promotion.verdict`)
TICKED = re.compile(
    r"(?<!tag )(?<!tags )`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)"
    r"(?<!\.db)(?<!\.csv)(?<!\.md)(?<!\.png)(?<!\.parquet)(?<!\.json)(?<!\.jsonl)(?<!\.yaml)(?<!\.py)`"
)
COMMAND = re.compile(r"`rlhf ([a-z][a-z-]*)")
MODEL = re.compile(r"models:/rlhf-(\w+)")
CONTEXT = re.compile(r"\bctx\.(\w+)")


def found(pattern: re.Pattern, paths: list[Path]) -> list[tuple[str, str]]:
    return [
        (p.relative_to(ROOT).as_posix(), m.group(1) if pattern.groups else m.group(0))
        for p in paths
        for m in pattern.finditer(p.read_text(encoding="utf-8"))
    ]


@cache
def top_names(module: str) -> dict[str, ast.AST]:
    """The names a module's source defines at its top, with their nodes."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
    return names


def resolves(dotted: str) -> bool:
    """A module, or an object defined at a module's top (or a class's attribute)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        if rest[0].startswith("__"):
            return True  # a module's own attribute (__file__)
        node = top_names(module).get(rest[0])
        if node is None:
            return False
        if len(rest) == 1 or not isinstance(node, ast.ClassDef):
            return len(rest) == 1
        inside = {getattr(n, "name", None) for n in node.body} | {
            t.id
            for n in node.body
            if isinstance(n, ast.AnnAssign) and isinstance(t := n.target, ast.Name)
        }
        return rest[1] in inside
    return False


def test_every_repository_path_named_exists():
    named = [(where, p) for where, p in found(PATH, TEXTS) if ".venv" not in p and "<" not in p]
    assert [(where, p) for where, p in named if not (ROOT / p).exists()] == []


# the tests that name modules that do not exist on purpose
MADE_UP = {"test_codedeps.py", "test_package.py", "test_docs_facts.py"}


def test_every_rlhf_module_or_object_named_exists():
    texts = [p for p in TEXTS if p.name not in MADE_UP]
    assert [(where, name) for where, name in found(MODULE, texts) if not resolves(name)] == []


def is_settings_key(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] in section_names() and parts[-1] in known_keys(tuple(parts))


def test_every_settings_key_named_in_the_docs_exists():
    """`section.key` in backticks, section a top-level key of params.yaml, names a key; an
    importable package's attribute that shares a section's name (`mlflow.log_table`) is not
    one."""
    wrong = []
    for where, dotted in found(TICKED, DOCS):
        first = dotted.split(".")[0]
        if first not in section_names() or first == "root":
            continue
        if is_settings_key(dotted):
            continue
        if importlib.util.find_spec(first) and hasattr(
            importlib.import_module(first), dotted.split(".")[1]
        ):
            continue
        wrong.append((where, dotted))
    assert wrong == []
    assert is_settings_key("ppo.kl_coef") and not is_settings_key("ppo.kl_coeff")
    assert is_settings_key("loop.label_studio.url") and "seed" in Settings.model_fields


def test_every_command_named_exists():
    commands = {name.split()[0] for name, _ in subcommands(build_parser())}
    assert "stage" in commands
    written = [p for p in DOCS if p.name != "settings.md"]  # its defaults hold a project title
    wrong = [(where, c) for where, c in found(COMMAND, written) if c not in commands]
    assert wrong == []


def test_every_registered_model_named_is_one_a_stage_registers():
    kinds = {s.registers for s in STAGES if s.registers}
    wrong = [(where, kind) for where, kind in found(MODEL, TEXTS) if kind not in kinds]
    assert wrong == []


def test_every_stage_context_method_named_exists():
    wrong = [(where, a) for where, a in found(CONTEXT, DOCS) if not hasattr(StageContext, a)]
    wrong = [(where, a) for where, a in wrong if a not in StageContext.__dataclass_fields__]
    assert wrong == []


@pytest.mark.parametrize(
    ("name", "exists"),
    [
        ("rlhf.core.settings", True),
        ("rlhf.core.settings.METHODS", True),
        ("rlhf.core.settings.Settings.section_digest", True),
        ("rlhf.core.settings.Settings.nothing_here", False),
        ("rlhf.core.readers", False),
        ("rlhf.tasks.STAGES", True),
    ],
)
def test_the_resolver_can_fail(name, exists):
    assert resolves(name) is exists
