"""MLflow helpers: the store, a run per stage, dataset inputs, and model registration.

The embedded default is a SQLite file and an artifact folder beside params.yaml; a user
who sets MLFLOW_TRACKING_URI (e.g. an `mlflow server`) gets that instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from huggingface_hub import ModelCard
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf.core.io import digest_path
from rlhf.core.settings import Settings, UserError
from rlhf.models.tokenizer import load_tokenizer

# What a logged model needs to load, at the versions it was made with (the project's pins);
# passing them also skips MLflow's slow requirement inference and its default that pulls in
# torchvision.
MODEL_REQUIREMENTS = [
    f"{name}=={version(name).split('+')[0]}"
    for name in ("torch", "transformers", "tokenizers", "safetensors")
]


# The user's own settings, read before MLflow runs: mlflow.set_tracking_uri/set_registry_uri
# export these variables, which would otherwise redirect the next project this process (or a
# child `rlhf stage`) runs to the first project's store.
_USER_ENV = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def masked(text: str) -> str:
    """text with the password of every URI in it replaced by ***."""
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)


class TrackingUnavailable(UserError):
    """The MLflow store could not be reached (after MLflow's bounded retries)."""


@contextlib.contextmanager
def tracking_errors(settings: Settings, what: str) -> Iterator[None]:
    """Turn a failure to reach the store into one line naming it (password masked)."""
    try:
        yield
    except (MlflowException, OSError, SQLAlchemyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrackingUnavailable(
            f"MLflow at {masked(tracking_uri(settings))}: {what} not recorded "
            f"({masked(first)[:300]})"
        ) from None


def tracking_uri(settings: Settings) -> str:
    uri = _USER_ENV["MLFLOW_TRACKING_URI"] or settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{settings.path(uri.removeprefix('sqlite:///'))}"
    return uri


def configure(settings: Settings) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(_USER_ENV["MLFLOW_REGISTRY_URI"] or uri)
    for key, value in _USER_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    name = settings.mlflow.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location: str | None = settings.mlflow.artifact_location
        if "://" not in settings.mlflow.artifact_location:
            # A tracking server keeps artifacts where it was told to (--artifacts-destination);
            # a folder on this machine would mean nothing to its other clients.
            remote = uri.startswith(("http://", "https://"))
            folder = settings.path(settings.mlflow.artifact_location)
            location = None if remote else folder.resolve().as_uri()
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # another process created it first
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
    return exp.experiment_id


# What defines a model: uncommitted changes here make a run "dirty" (a README edit does not).
DEFINING = (
    "tasks",
    "models",
    "flows",
    "core",
    "demo",
    "params.yaml",
    "dvc.yaml",
    "data.dvc",
    "pyproject.toml",
    "requirements.lock",
)


def git_commit(root: str | Path) -> tuple[str, bool]:
    """(commit, dirty) of the repository holding root; ("unknown", True) outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *DEFINING],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return rev, bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def log_dataset(path: Path, name: str, digest: str, context: str) -> None:
    """Record a Parquet dataset as a run input, carrying its content digest (DVC's md5)."""
    df = pd.read_parquet(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # from_pandas warns that a path can be read two ways
        ds = from_pandas(df, source=str(path), name=name, digest=digest[:36])
    mlflow.log_input(ds, context=context, tags={"md5": digest})


def model_card(name: str, lineage: dict[str, str]):
    """A local model card (MLflow would otherwise look one up on the hub by name)."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(lineage.items()))
    return ModelCard(
        f"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# {name}\n\n"
        f"Trained by the rlhf-pipeline.\n\n| lineage | |\n|---|---|\n{rows}\n"
    )


def registered_version(name: str, model_digest: str) -> str | None:
    """The version of `name` already holding exactly these weights, if any."""
    found = MlflowClient().search_model_versions(
        f"name='{name}' and tags.model_digest='{model_digest}'"
    )
    return str(min(int(v.version) for v in found)) if found else None


def register_model(
    model_dir: Path, kind: str, task: str, settings: Settings, lineage: dict[str, str]
) -> dict:
    """Log an HF checkpoint folder in the active run and register it as <prefix>-<kind>.

    Returns {"name", "version", "uri"}; the version carries the lineage as tags. Weights
    identical to a registered version (a rerun on CPU is bit-identical) are not registered
    again: the run is tagged with that version, so the registry holds each model once and
    its aliases keep meaning what they meant.
    """
    name = f"{settings.mlflow.registry_prefix}-{kind}"
    digest = digest_path(model_dir)
    version = registered_version(name, digest)
    if version is None:
        loader = (
            AutoModelForSequenceClassification
            if task == "text-classification"
            else AutoModelForCausalLM
        )
        model, tok = loader.from_pretrained(model_dir), load_tokenizer(str(model_dir))
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tok},
            name=kind,
            task=task,
            pip_requirements=MODEL_REQUIREMENTS,
            registered_model_name=name,
            await_registration_for=60,
            model_card=model_card(name, lineage),
        )
        version = str(info.registered_model_version)
        client = MlflowClient()
        for key, value in {**lineage, "model_digest": digest}.items():
            client.set_model_version_tag(name, version, key, value)
    mlflow.set_tags({"registered_model": f"models:/{name}/{version}", "model_digest": digest})
    return {"name": name, "version": version, "uri": f"models:/{name}/{version}"}
