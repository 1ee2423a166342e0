"""A dataset source MLflow records for a file or folder that DVC versions.

A run's dataset input then names where its data lives in the project rather than a path on
the machine that ran it: the repository, the path DVC tracks, the git revision whose
data.dvc or dvc.lock records it, and its md5. The MLflow UI shows these fields on the run and
model pages; `load()` fetches that exact version as `dvc get` would.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path
from typing import Any

from dvc.repo import Repo
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source


class DvcSource(DatasetSource):
    FIELDS = ("repo", "path", "rev", "md5", "dvc_file", "produced_by")

    def __init__(
        self, repo: str, path: str, rev: str, md5: str, dvc_file: str, produced_by: str = ""
    ):
        self.repo = repo  # the git remote's URL, or the project folder when it has none
        self.path = path  # relative to the repository root, as DVC names it
        self.rev = rev  # the git commit the run ran at
        self.md5 = md5  # DVC's md5 of a file; for a folder, the digest of its files
        self.dvc_file = dvc_file  # the file that records it: data.dvc or dvc.lock
        self.produced_by = produced_by  # "<stage>/<out>" that wrote it; "" for raw data

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, dst_path: str | None = None) -> str:
        """Fetch this version into dst_path (default: the current folder); returns its path."""
        out = Path(dst_path or ".") / Path(self.path).name
        Repo.get(self.repo, self.path, out=str(out), rev=self.rev)
        return str(out)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built from a project's state, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcSource:
        raise NotImplementedError(
            "a DvcSource is built from the project's DVC records (DvcSource(...)), not resolved"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DvcSource:
        return cls(**{k: str(source_dict.get(k, "")) for k in cls.FIELDS})


def repository(root: Path) -> str:
    """Where `dvc get` finds the project: its git remote `origin`, else the folder itself (git
    is optional)."""
    try:
        remote = subprocess.run(
            ["git", "config", "--get", "remote.origin.url"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:  # no git on PATH
        remote = ""
    return remote or str(root.resolve())


register_dataset_source(DvcSource)  # type: ignore[arg-type]  # mlflow annotates the class as an instance


def in_repository(root: Path) -> bool:
    """Whether folder root is in a DVC repository (its own, or a folder above it)."""
    root = root.resolve()
    return any((folder / ".dvc").is_dir() for folder in (root, *root.parents))


def run_dvc(root: Path, *args: str) -> str | None:
    """`dvc <args>` in folder root, with this interpreter's DVC: None when it succeeded, else
    the last line it said."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]


def cache_dir(root: Path) -> Path:
    """The DVC cache of the project at root (.dvc/config's cache.dir, relative to .dvc/), where
    DVC's symlink and hardlink checkouts point."""
    config = configparser.RawConfigParser()
    try:
        config.read([root / ".dvc" / "config", root / ".dvc" / "config.local"], encoding="utf-8")
        folder = config.get("cache", "dir", fallback="cache")
    except (configparser.Error, UnicodeDecodeError):  # DVC's own reader says what is wrong
        folder = "cache"
    return (root / ".dvc" / folder).resolve()
