"""The package as a whole: one import namespace, rooms that keep to themselves, and an install
that works outside a checkout."""

import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from rlhf.core.pipeline.codedeps import imported_names, top_packages
from tests.support.project import ROOT, make_project

PACKAGES = top_packages()


def project_imports(folder: str) -> dict[str, set[str]]:
    """rlhf.* names imported anywhere in each module under a top-level folder."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = "rlhf." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        names = imported_names(path.read_text(), name, path.name == "__init__.py")
        found[name] = {n for n in names if n.startswith("rlhf.")}
    return found


def arrows(source: str, target: str) -> list[str]:
    return [
        f"{m} -> {n}"
        for m, names in project_imports(source).items()
        for n in names
        if n == f"rlhf.{target}" or n.startswith(f"rlhf.{target}.")
    ]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("models", "core"),
        ("models", "tasks"),
        ("models", "flows"),
        ("models", "demo"),
        ("core", "tasks"),
        ("core", "flows"),
        ("core", "demo"),
        ("tasks", "flows"),
        ("tasks", "demo"),
        ("flows", "demo"),
    ],
)
def test_no_arrow_from_one_room_into_another_it_must_not_know(source, target):
    assert arrows(source, target) == []


# core's rooms, lowest first: a module imports its own room, the ones before it, and the
# modules at core's top (settings, io), which import no room
CORE_ROOMS = ("data", "tracking", "pipeline", "feedback", "evaluation", "rewards", "policy")


def room_of(module: str) -> str | None:
    """The core room a module (or name imported from one) belongs to; None at core's top."""
    parts = module.split(".")
    return parts[2] if len(parts) >= 3 and parts[2] in CORE_ROOMS else None


def test_core_rooms_import_only_the_rooms_below_them():
    wrong = []
    for module, names in project_imports("core").items():
        here = room_of(module)
        allowed = set(CORE_ROOMS[: CORE_ROOMS.index(here) + 1]) if here else set()
        for name in names:
            there = room_of(name)
            if name.startswith("rlhf.core.") and there is not None and there not in allowed:
                wrong.append(f"{module} -> {name}")
    assert wrong == []


def test_every_core_module_is_in_a_room_or_at_the_top():
    top = {p.stem for p in (ROOT / "core").glob("*.py")}
    assert top == {"__init__", "settings", "io"}
    assert {p.name for p in (ROOT / "core").iterdir() if p.is_dir() and p.name[0] != "_"} == set(
        CORE_ROOMS
    )


def test_the_boundary_check_sees_an_import_hidden_in_a_function(tmp_path):
    source = "def f():\n    from rlhf.demo.gold import judge\n"
    assert "rlhf.demo.gold" in imported_names(source, "rlhf.core.x", is_package=False)


def test_every_folder_is_a_regular_package():
    for folder in PACKAGES:
        for sub in [ROOT / folder, *(p.parent for p in (ROOT / folder).rglob("*.py"))]:
            assert (sub / "__init__.py").is_file(), sub


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel and installed into a new virtualenv outside the checkout,
    its dependencies borrowed from the test environment (but not the editable install)."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python*/site-packages"))
    deps = [p for p in sys.path if Path(p).name == "site-packages" and Path(p).is_dir()]
    # plain path entries: the test environment's .pth files (the editable finder) do not run
    (site / "deps.pth").write_text("".join(f"{p}\n" for p in deps))
    wheel = next((root / "dist").glob("*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin/python"),
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return env_dir


def test_the_wheel_puts_one_name_in_site_packages(installed):
    site = next(installed.glob("lib/python*/site-packages"))
    top = {p.name for p in site.iterdir() if p.name not in ("deps.pth", "__pycache__")}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rlhf"}
    wheel = zipfile.ZipFile(next(installed.parent.glob("dist/*.whl")))
    assert {n.split("/")[0] for n in wheel.namelist() if ".dist-info" not in n} == {"rlhf"}


@pytest.mark.e2e  # an install outside the checkout runs a stage
def test_the_installed_rlhf_runs_a_project_from_another_folder(installed, tmp_path):
    project = make_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    rlhf = [str(installed / "bin/rlhf"), "--params", str(project / "params.yaml")]
    where = subprocess.run(
        [str(installed / "bin/python"), "-c", "import rlhf.tasks; print(rlhf.tasks.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(installed))
    out = subprocess.run(
        [*rlhf, "stage", "ingest"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (project / "artifacts/ingest/corpus.parquet").is_file()
    assert not (elsewhere / "artifacts").exists() and not (elsewhere / "mlflow.db").exists()
    dvc_yaml = subprocess.run(
        [*rlhf, "dvc-yaml"], cwd=elsewhere, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert dvc_yaml == (ROOT / "dvc.yaml").read_text()


def test_pyproject_lists_every_package_folder():
    """A folder missing from pyproject's list would be left out of the wheel (and so of every
    install but a checkout's)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        "rlhf." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in PACKAGES
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(config["packages"]) == found
    assert config["package-dir"] == {"rlhf": "."}


def test_the_package_folders_are_found_not_listed():
    assert set(PACKAGES) == {"core", "demo", "flows", "models", "tasks"}
