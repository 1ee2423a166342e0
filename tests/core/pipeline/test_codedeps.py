"""Each stage's code dependencies are derived from its imports, and they cover every project
module the stage really loads when it runs."""

import json
import subprocess
import sys
import textwrap

import pytest

from rlhf.core.pipeline.codedeps import code_deps, imported_names, source_path
from rlhf.core.settings import METHODS, Policy, load_settings
from rlhf.flows.runner import RUNNER, code_files, stage_code
from rlhf.tasks import BY_NAME, STAGES
from tests.support.project import ROOT

# For each module named on the command line: the project modules importing it loads, in a fresh
# child forked after the heavy third-party libraries are loaded once (a stage's module brings in
# everything it runs: imports sit at the top of modules).
LOADED = """
import importlib, json, os, sys
import great_expectations.expectations, mlflow.transformers, pandas, peft, prefect.artifacts, torch
import matplotlib.pyplot, transformers.models.llama.modeling_llama, transformers.trainer
for module in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:
        importlib.import_module(module)
        found = sorted(m for m in sys.modules if m.startswith("rlhf."))
        os.write(write, json.dumps(found).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        print(module, f.read())
    os.wait()
"""


TRAINERS = sorted({m.trainer.partition(":")[0] for m in METHODS.values()})


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", LOADED, *(s.module for s in STAGES), *TRAINERS],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT.parent,
    )
    lines = [line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith("rlhf.")]
    return {module: set(json.loads(found)) for module, found in lines}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_stages_key_covers_every_project_module_it_loads(stage, loaded):
    settings = load_settings(ROOT / "params.yaml")
    covered = set(stage_code(stage, settings))
    missing = loaded[stage.module] - covered
    assert not missing, f"{stage.name}: loads modules its cache key does not cover: {missing}"
    assert stage.module in loaded[stage.module]


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_the_policy_stages_key_covers_its_methods_trainer_and_no_other(method, loaded):
    settings = load_settings(ROOT / "params.yaml")
    settings = settings.model_copy(update={"policy": Policy(method=method.name)})
    covered = set(stage_code(BY_NAME["policy"], settings))
    trainer = method.trainer.partition(":")[0]
    assert not (loaded["rlhf.tasks.policy"] | loaded[trainer]) - covered
    others = {m.trainer.partition(":")[0] for m in METHODS.values()} - {trainer}
    assert not others & covered, "another method's trainer would retrain this one"


def test_the_plugins_a_stage_names_in_its_settings_are_covered_too():
    settings = load_settings(ROOT / "params.yaml")
    (evaluate,) = [s for s in STAGES if s.name == "evaluate"]
    assert settings.evaluate.reference_judge == "rlhf.demo.gold:judge"
    assert {"rlhf.demo.gold", "rlhf.demo.task"} <= set(stage_code(evaluate, settings))
    off = settings.model_copy(
        update={"evaluate": settings.evaluate.model_copy(update={"reference_judge": None})}
    )
    assert not [m for m in stage_code(evaluate, off) if m.startswith("rlhf.demo")]


def test_no_stage_depends_on_another_stages_module():
    settings = load_settings(ROOT / "params.yaml")
    for stage in STAGES:
        others = {s.module for s in STAGES} - {stage.module}
        assert not others & set(stage_code(stage, settings)), stage.name


def test_dvc_yaml_deps_are_the_derived_code_files():
    settings = load_settings(ROOT / "params.yaml")
    for stage in STAGES:
        files = code_files(stage, settings)
        module = {f"tasks/{stage.name}.py", f"tasks/{stage.name}/__init__.py"}  # or a package
        assert module & set(files) and "flows/runner.py" in files
        assert all((ROOT / f).is_file() for f in files)


def test_imports_anywhere_in_a_module_count(tmp_path):
    source = textwrap.dedent("""
        import os
        from . import sibling
        from .. import cousin
        def f():
            from rlhf.core import io
            if True:
                import rlhf.models.lm as lm
    """)
    names = imported_names(source, "rlhf.tasks.x", is_package=False)
    assert {
        "os",
        "rlhf.tasks.sibling",
        "rlhf.cousin",
        "rlhf.core",
        "rlhf.core.io",
        "rlhf.models.lm",
    } <= names


def test_a_new_import_in_a_stage_changes_its_deps(tmp_path, monkeypatch):
    """What a stage gains by import, its key gains: a stage module written here that imports
    one more project module has that module (and what it imports) in its code deps."""
    package = tmp_path / "rlhf_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("rlhf.core.pipeline.codedeps.ROOT_PACKAGE", "rlhf_probe")
    (package / "stage.py").write_text("from rlhf_probe import helper\n")
    (package / "helper.py").write_text("def f():\n    from rlhf_probe import deep\n")
    (package / "deep.py").write_text("")
    (package / "unused.py").write_text("")
    code_deps.cache_clear()
    before = code_deps("rlhf_probe.stage")
    assert set(before) == {"rlhf_probe", "rlhf_probe.stage", "rlhf_probe.helper", "rlhf_probe.deep"}
    (package / "stage.py").write_text("from rlhf_probe import helper, unused\n")
    code_deps.cache_clear()
    assert "rlhf_probe.unused" in code_deps("rlhf_probe.stage")
    code_deps.cache_clear()


def test_source_paths_are_relative_to_the_package_root():
    assert source_path(RUNNER) == "flows/runner.py"
    assert source_path("rlhf.core.feedback") == "core/feedback/__init__.py"
