"""MLflow helpers: the store, a run per stage, dataset inputs, and model registration.

The embedded default is a SQLite file and an artifact folder beside params.yaml; a user
who sets MLFLOW_TRACKING_URI (e.g. an `mlflow server`) gets that instead.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import socket
import sqlite3
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from huggingface_hub import ModelCard
from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModelInput,
    LoggedModelOutput,
    Metric,
    Param,
)
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from sqlalchemy.exc import SQLAlchemyError
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf.core.io import digest_path
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking.dvc_source import DvcSource
from rlhf.models.lm import weights_digest
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


def store_fault(e: Exception) -> str | None:
    """The one line for an error of the store that no seam named (MLflow's, its database's),
    or None for any other error."""
    if not isinstance(e, MlflowException | SQLAlchemyError):
        return None
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"MLflow at {masked(mlflow.get_tracking_uri())}: {masked(first)[:300]}"


def tracking_uri(settings: Settings) -> str:
    uri = _USER_ENV["MLFLOW_TRACKING_URI"] or settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{store_root(settings) / uri.removeprefix('sqlite:///')}"
    return uri


def store_root(settings: Settings) -> Path:
    """The project folder a local store's relative paths are in, and the project its runs name:
    params.yaml's folder; for a DVC experiment run in a temporary copy of the repository
    (`dvc exp run --queue` or `--temp`, which name the repository in DVC_ROOT), the same folder
    of the repository itself, so that the experiment's runs stay and are the project's."""
    root = Path(settings.root).resolve()
    outer = os.environ.get("DVC_ROOT")
    if not outer:
        return root
    copies = Path(outer).resolve() / ".dvc" / "tmp" / "exps"
    if not root.is_relative_to(copies):
        return root
    inside = root.relative_to(copies).parts[1:]  # past the copy's own folder (tmpXXXX)
    return Path(outer).resolve().joinpath(*inside)


def is_interruption(e: BaseException) -> bool:
    """A stop asked for from outside: Ctrl-C, SIGTERM, an exit. Inside a Prefect flow run
    SIGTERM arrives as Prefect's own TerminationSignal (looked up only where Prefect is
    loaded: a stage run by `rlhf stage` never imports it)."""
    if isinstance(e, KeyboardInterrupt | SystemExit):
        return True
    prefect = sys.modules.get("prefect.exceptions")
    return prefect is not None and isinstance(e, prefect.ExternalSignal)


# A registered version's weights, tensor by tensor (rlhf.models.lm.weights_digest): checked
# whenever a version is loaded back from the registry.
WEIGHTS_DIGEST = "weights_digest"

# Every run names the project and the process that opened it, so that a run whose process
# was killed (SIGKILL, power loss) and left RUNNING is told from one still going.
PROJECT_TAG, PROCESS_TAG, ENDED_BY_TAG = "rlhf.project", "rlhf.process", "rlhf.ended_by"
DVC_EXPERIMENT_TAG = "dvc.experiment"  # the DVC experiment (`dvc exp run`) a run belongs to
PARAMS_TAG = "params_digest"  # the digest of the params file a run read
ORPHANED = "its process ended without closing it (SIGKILL, power loss); closed FAILED by the next"


def process_started(pid: int) -> str:
    """When process pid started, in clock ticks since boot ("?" where /proc cannot say): with
    the pid, it tells a live process from a later one that reused its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def machine_view() -> tuple[str, str, str]:
    """(host, boot, pid namespace) of this process: pids mean the same only where all three
    are equal (containers of one pod share a host name but not their pids)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        boot = namespace = "?"
    return socket.gethostname(), boot, namespace


def this_process() -> str:
    host, boot, namespace = machine_view()
    return f"{host}:{os.getpid()}:{process_started(os.getpid())}:{boot}:{namespace}"


def is_gone(process: str) -> bool:
    """Whether the process a run's PROCESS_TAG names has ended: on this machine since its boot
    and in this pid namespace, its pid is free or another process's; or this machine has
    booted since. Anything else (another machine or container, a tag it cannot read) is
    never taken for gone."""
    fields = process.split(":")
    if len(fields) != 5 or not fields[1].isdigit():
        return False
    host, pid, started, boot, namespace = fields
    here, boot_now, namespace_now = machine_view()
    if host != here or "?" in (boot, boot_now, started):
        return False
    if boot != boot_now:
        return True  # rebooted: nothing of before is running
    return namespace == namespace_now and process_started(int(pid)) != started


@dataclass(frozen=True)
class Store:
    """The MLflow store a project records to: where it is, the experiment its runs go to and
    the project they are tagged with. Every run of the project is opened through it."""

    uri: str
    registry_uri: str
    experiment_id: str
    project: str

    def tags(self, tags: dict | None) -> dict:
        """A run's tags with the project's and this process's."""
        return {**(tags or {}), PROJECT_TAG: self.project, PROCESS_TAG: this_process()}

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri, self.registry_uri)

    @contextlib.contextmanager
    def run(self, name: str, *, parent_id: str | None = None, tags: dict | None = None):
        """An MLflow run, active inside the block (nested under parent_id when given): ended
        FINISHED, FAILED when the block raises, KILLED when it is interrupted."""
        self.activate()
        with mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=name,
            parent_run_id=parent_id,
            nested=parent_id is not None,
            tags=self.tags(tags),
        ) as run:
            try:
                yield run
            except BaseException as e:
                if is_interruption(e):
                    mlflow.end_run("KILLED")  # MLflow's own exit would mark it FAILED
                raise

    def parent_run(self, name: str, tags: dict[str, str]) -> contextlib.AbstractContextManager[str]:
        """The parent run of a flow (its stages' runs nest under it), not active: yields its
        id; ended FINISHED, FAILED when the block raises, KILLED when it is interrupted."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=self.tags(tags))
        return self.ending(run.info.run_id)

    def experiment_run(
        self, name: str, identity: dict[str, str], tags: dict[str, str]
    ) -> contextlib.AbstractContextManager[str]:
        """The run of DVC experiment name, which its stages' runs nest under: made by its first
        stage, reopened by each next one (each a process of its own), ended as each ends.
        identity: the tags (hex digests and revisions) that tell it from an experiment of the
        same name on another baseline or params, which gets a run of its own."""
        mark = {**identity, DVC_EXPERIMENT_TAG: name, PROJECT_TAG: self.project}
        match = " and ".join(f"tags.`{k}` = '{v}'" for k, v in identity.items() if "'" not in v)
        candidates = self.client.search_runs(
            [self.experiment_id], filter_string=match, max_results=100
        )
        found = [r for r in candidates if all(r.data.tags.get(k) == v for k, v in mark.items())]
        if not found:
            return self.parent_run(name, {**tags, **mark})
        run_id = found[0].info.run_id
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, PROCESS_TAG, this_process())
        return self.ending(run_id)

    def log_to(self, run_id: str, metrics: dict[str, float], params: dict | None = None) -> None:
        """Metrics (stamped now) and params logged on run run_id, which need not be active; a
        param the run already holds keeps its first value (MLflow refuses to change one)."""
        held = self.client.get_run(run_id).data.params if params else {}
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items() if k not in held],
        )

    @contextlib.contextmanager
    def ending(self, run_id: str) -> Iterator[str]:
        """Run run_id ended as the block ends: FINISHED, FAILED when it raises, KILLED when
        it is interrupted."""
        client = self.client
        status = "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        except BaseException as e:
            status = "KILLED" if is_interruption(e) else "FAILED"
            raise
        finally:
            client.set_terminated(run_id, status)

    def activate(self) -> None:
        """Point MLflow's fluent API (and the transformers flavour's logging) at this store:
        another project's store may have been active in this process since."""
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.registry_uri)
        for key, value in _USER_ENV.items():  # set_*_uri export them; keep the user's own
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


SQLITE_HEADER = b"SQLite format 3\x00"


def store_problem(uri: str, wait: float) -> str | None:
    """Why the store at uri cannot be used, found within wait seconds (None: it can, or only
    MLflow can tell: another scheme, a plugin's): a SQLite store whose folder is missing,
    that is empty or not SQLite or that stays locked, a tracking server that does not answer."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.partition("+")[0].lower()
    if scheme == "sqlite" and parts.path:  # sqlite:///relative, sqlite:////absolute
        return sqlite_problem(Path(urllib.request.url2pathname(parts.path[1:])), wait)
    if scheme in ("http", "https"):
        return server_problem(parts, wait)
    return None


def sqlite_problem(path: Path, wait: float) -> str | None:
    if not path.parent.is_dir():
        return f"{path.parent}: no such folder (make it, or correct the tracking URI)"
    if not path.exists():
        return None  # a new store, made on first use
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return (
            f"{path}: an empty file, not an MLflow store (restore it from its backup, or remove "
            "it to start a new store)"
        )
    if head != SQLITE_HEADER:
        return f"{path}: not an SQLite database"
    try:  # wait for a writer (a backup, another run) as long as the settings say
        with contextlib.closing(sqlite3.connect(path, timeout=wait)) as db:
            db.execute("BEGIN IMMEDIATE")
            db.rollback()
    except sqlite3.OperationalError as e:
        return f"{path}: {e} (waited mlflow.wait_seconds, {wait:g} s)"
    except sqlite3.DatabaseError as e:
        return f"{path}: {e}"
    return None


def server_problem(parts: urllib.parse.SplitResult, wait: float) -> str | None:
    """Whether a tracking server answers at all: any HTTP answer will do (MLflow's client,
    with its credentials and certificates, judges the rest); no connection, or none within
    wait seconds, is the problem."""
    try:  # /health needs no credentials: they are left out of the probe
        host = f"[{parts.hostname}]" if ":" in str(parts.hostname) else str(parts.hostname)
        address = f"{host}:{parts.port}" if parts.port else host
    except ValueError as e:  # a port out of range
        return f"not a usable address ({e})"
    health = urllib.parse.urlunsplit(
        (parts.scheme, address, f"{parts.path.rstrip('/')}/health", "", "")
    )
    try:
        with urllib.request.urlopen(health, timeout=wait):
            return None
    except urllib.error.HTTPError:  # it answered
        return None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):  # TLS is MLflow's client's to set up
            return None
        return f"no answer ({e.reason})"
    except TimeoutError:
        return f"no answer within mlflow.wait_seconds ({wait:g} s)"
    except OSError as e:
        return f"no answer ({e})"


def artifacts_problem(location: str | None) -> str | None:
    """Why a local artifact folder cannot take the models and files runs log (None: it can)."""
    if not location or not location.startswith("file:"):
        return None  # a server's or a bucket's: the server answers for it
    folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    existing = next((p for p in [folder, *folder.parents] if p.exists()), folder)
    if not existing.is_dir():
        return f"{existing}: not a folder (the artifact store goes there)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing}: not writable (the artifact store goes there)"
    return None


def open_store(settings: Settings) -> Store:
    """The project's store, made active: configured (its experiment found or created, the runs
    a killed process of this project left RUNNING closed) the first time this process asks."""
    uri = tracking_uri(settings)
    with tracking_errors(settings, "the command's runs"):
        store = _store(
            uri,
            _USER_ENV["MLFLOW_REGISTRY_URI"] or uri,
            settings.mlflow.experiment,
            artifact_location(settings, uri),
            str(store_root(settings)),
            settings.mlflow.wait_seconds,
        )
    store.activate()
    return store


def close_orphans(store: Store) -> list[str]:
    """End FAILED, tagged why, the runs of store's project left RUNNING by a process that is
    gone; returns their ids."""
    client = store.client
    running = client.search_runs(
        [store.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    orphans = [
        run.info.run_id
        for run in running
        if run.data.tags.get(PROJECT_TAG) == store.project
        and is_gone(run.data.tags.get(PROCESS_TAG, ""))
    ]
    for run_id in orphans:
        client.set_tag(run_id, ENDED_BY_TAG, f"{ORPHANED} command of this project")
        client.set_terminated(run_id, "FAILED")
    if orphans:
        print(
            f"MLflow: closed {len(orphans)} run(s) a killed process left RUNNING (FAILED, tag "
            f"{ENDED_BY_TAG}): {', '.join(orphans)}",
            file=sys.stderr,
        )
    return orphans


def artifact_location(settings: Settings, uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: a tracking server keeps them where it was
    told to (--artifacts-destination), a folder on this machine meaning nothing to its other
    clients; a local store beside params.yaml."""
    location = settings.mlflow.artifact_location
    if "://" in location:
        return location
    if uri.startswith(("http://", "https://")):
        return None
    return (store_root(settings) / location).resolve().as_uri()


@functools.cache
def _store(
    uri: str, registry_uri: str, experiment: str, location: str | None, project: str, wait: float
) -> Store:
    problem = store_problem(uri, wait) or artifacts_problem(location)
    if problem:
        raise TrackingUnavailable(f"MLflow at {masked(uri)}: {masked(problem)}")
    store = Store(
        uri, registry_uri, _experiment_id(uri, registry_uri, experiment, location), project
    )
    close_orphans(store)
    return store


def _experiment_id(uri: str, registry_uri: str, experiment: str, location: str | None) -> str:
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        try:
            return mlflow.create_experiment(experiment, location)
        except MlflowException:  # another process created it first
            found = mlflow.get_experiment_by_name(experiment)
            if found is None:
                raise
    return found.experiment_id


def input_dataset(path: Path, name: str, source: DvcSource):
    """The MLflow dataset of a stage input: a Parquet table with its schema and profile, any
    other file or folder by its digest alone."""
    digest = source.md5[:36]  # the longest digest MLflow stores
    if path.suffix != ".parquet":
        # MetaDataset has no profile to give; mlflow declares it abstract, returns None
        return MetaDataset(source, name=name, digest=digest)  # type: ignore[abstract]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # from_pandas warns that a path can be read two ways
        return from_pandas(pd.read_parquet(path), source=source, name=name, digest=digest)


def log_inputs(run_id: str, datasets: list[tuple[Any, str]], model_ids: list[str]) -> None:
    """Record what a run read: (dataset, context) pairs and the logged models it started from."""
    client = MlflowClient()
    client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for ds, context in datasets
        ],
        models=[LoggedModelInput(m) for m in model_ids],
    )


def attach_metrics(run_id: str, metrics: dict[str, float], model_id: str, dataset=None) -> None:
    """Log metrics on a logged model, measured on dataset: the model page lists them, and the
    dataset under "Datasets used"."""
    stamp = int(time.time() * 1000)
    named = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset else {}
    MlflowClient().log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), stamp, 0, model_id=model_id, **named)
            for k, v in metrics.items()
            if math.isfinite(v)
        ],
    )


def model_card(name: str, lineage: dict[str, str]):
    """A local model card (MLflow would otherwise look one up on the hub by name)."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(lineage.items()))
    return ModelCard(
        f"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# {name}\n\n"
        f"Trained by the rlhf-pipeline.\n\n| lineage | |\n|---|---|\n{rows}\n"
    )


def registered_version(name: str, model_digest: str):
    """The (first) version of `name` already holding exactly these weights, if any."""
    found = MlflowClient().search_model_versions(
        f"name='{name}' and tags.model_digest='{model_digest}'"
    )
    return min(found, key=lambda v: int(v.version)) if found else None


def logged_model_id(version) -> str:
    """The logged model a registry version was created from (its source models:/<id>)."""
    return str(version.source).removeprefix("models:/")


def register_model(
    model_dir: Path, kind: str, task: str, settings: Settings, tags: dict[str, str]
) -> dict:
    """Log an HF checkpoint folder in the active run as a logged model and register a version
    of <prefix>-<kind> from it.

    Returns {"name", "version", "uri", "model_id"}; the version carries tags only for what
    MLflow has no field for (the weights' digest, the caller's tags). Weights identical to a
    registered version (a rerun on CPU is bit-identical) are not logged again: the run is
    linked to that version's logged model as its output, so the registry holds each model
    once and its aliases keep meaning what they meant.
    """
    name = f"{settings.mlflow.registry_prefix}-{kind}"
    digest = digest_path(model_dir)
    client = MlflowClient()
    existing = registered_version(name, digest)
    if existing is None:
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
            model_card=model_card(name, tags),
        )
        version, model_id = str(info.registered_model_version), str(info.model_id)
        registered = {**tags, "model_digest": digest, WEIGHTS_DIGEST: weights_digest(model_dir)}
        for key, value in registered.items():
            client.set_model_version_tag(name, version, key, value)
    else:
        version, model_id = str(existing.version), logged_model_id(existing)
        run = mlflow.active_run()
        assert run is not None, "register_model runs inside a stage's run"
        client.log_outputs(run.info.run_id, [LoggedModelOutput(model_id, step=0)])
    mlflow.set_tags({"registered_model": f"models:/{name}/{version}", "model_digest": digest})
    return {
        "name": name,
        "version": version,
        "uri": f"models:/{name}/{version}",
        "model_id": model_id,
    }
