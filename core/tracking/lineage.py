"""Lineage: from a registered model back to the raw data, and the commands that rebuild it.

Everything is MLflow's own lineage, the links the UI shows: a registry version was created
from a logged model; the model's run records as inputs the logged models it started from and
the datasets it read, each dataset's source the DVC-tracked path, md5 and git revision. A
dataset a stage wrote leads to that stage's run (the run's `output.<out>` tag holds the md5:
MLflow has no field for a run's output data); the walk ends at the raw data folders that
data.dvc versions.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from rlhf.core.settings import UserError, parse_yaml
from rlhf.core.tracking.registry import key_metrics, registry_client
from rlhf.core.tracking.store import logged_model_id

URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
COMMIT = re.compile(r"[0-9a-f]{7,40}")  # what a commit tag must be to reach git
# figures of how a run went, not of what it built: a rebuild reads differently, and a model
# is not described by them
HOW_IT_RAN = frozenset({"seconds", "tokens_per_s", "resumed_from"})
PROVENANCE = ("git_dirty", "params_digest", "data_dvc_md5")  # run tags besides the commit


def resolve(uri: str):
    """The ModelVersion a models:/NAME/VERSION or models:/NAME@ALIAS URI names."""
    m = URI.match(uri)
    if not m:
        raise UserError(f"{uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    client = registry_client()
    try:
        if m["version"]:
            return client.get_model_version(m["name"], m["version"])
        return client.get_model_version_by_alias(m["name"], m["alias"])
    except MlflowException:
        raise UserError(f"{uri}: no such model version in the registry") from None


def producing_run(experiment_id: str, stage: str, out: str, digest: str):
    """The latest run of `stage` that wrote `out` with this digest, or None."""
    runs = registry_client().search_runs(
        [experiment_id],
        f"tags.stage = '{stage}' and tags.`output.{out}` = '{digest}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def input_model_ids(run) -> list[str]:
    """The logged models a run started from (its own outputs, which it also logged metrics
    on, are not among them)."""
    own = {m.model_id for m in run.outputs.model_outputs} if run.outputs else set()
    return [m.model_id for m in run.inputs.model_inputs if m.model_id not in own]


def registered_uris(model_id: str) -> list[str]:
    """The registry versions created from a logged model (MLflow tags the model with them)."""
    try:
        tags = registry_client().get_logged_model(model_id).tags
    except MlflowException:
        return []
    versions = json.loads(tags.get("mlflow.modelVersions", "[]"))
    return [f"models:/{v['name']}/{v['version']}" for v in versions]


def dataset_source(dataset_input) -> dict[str, str]:
    """The DVC source a stage recorded for a dataset input ({} for a source of another kind)."""
    ds = dataset_input.dataset
    return json.loads(ds.source) if ds.source_type == "dvc" else {}


def dataset_node(
    dataset_input, experiment_id: str, data_dvc_md5: str, path: frozenset[str] = frozenset()
) -> dict:
    """A run's dataset input: raw data (a leaf, in the data.dvc version the reading run
    recorded), or an upstream stage's output with the run that wrote it and, recursively,
    that run's own datasets. path: the runs walked to reach it, so tags that loop back end
    the walk."""
    source = dataset_source(dataset_input)
    node: dict[str, Any] = {
        "path": dataset_input.dataset.name,
        "md5": source.get("md5", dataset_input.dataset.digest),
        "source": source,
    }
    if not source.get("produced_by"):
        return node | {"data_dvc_md5": data_dvc_md5}
    stage, _, out = source["produced_by"].partition("/")
    run = producing_run(experiment_id, stage, out, node["md5"])
    if run is not None:
        run_id = run.info.run_id
        node["run"] = {"run_id": run_id, "stage": stage}
        node["inputs"] = (
            []
            if run_id in path
            else [
                dataset_node(
                    d, experiment_id, run.data.tags.get("data_dvc_md5", ""), path | {run_id}
                )
                for d in run.inputs.dataset_inputs
            ]
        )
    return node


def model_node(version, path: frozenset[str] = frozenset()) -> dict:
    """A model version, its run, its datasets, and the models it came from. path: the
    versions walked to reach it, so a cycle of links ends instead of recursing."""
    client = registry_client()
    run = client.get_run(version.run_id)
    run_tags, tags = run.data.tags, version.tags
    kind = version.name.rsplit("-", 1)[-1]
    node = {
        "uri": f"models:/{version.name}/{version.version}",
        "name": version.name,
        "version": str(version.version),
        "aliases": sorted(version.aliases),
        "run_id": version.run_id,
        "model_id": logged_model_id(version),
        "stage": run_tags.get("stage", ""),
        "git_commit": run_tags.get(MLFLOW_GIT_COMMIT, ""),
        **{k: run_tags.get(k, "") for k in PROVENANCE},
        "model_digest": tags.get("model_digest", ""),
        **({"rewards": tags["rewards"]} if tags.get("rewards") else {}),
        "metrics": key_metrics(kind, run.data.metrics, tags),
        "datasets": [
            dataset_node(d, run.info.experiment_id, run_tags.get("data_dvc_md5", ""))
            for d in run.inputs.dataset_inputs
        ],
        "models": [],
    }
    here = path | {node["uri"]}
    for model_id in input_model_ids(run):
        uris = registered_uris(model_id) or [f"models:/{model_id}"]
        for uri in uris:
            if uri in here:
                node["models"].append({"uri": uri, "cycle": True})
            elif URI.match(uri):
                node["models"].append(model_node(resolve(uri), here))
            else:
                node["models"].append({"uri": uri})  # logged, never registered
    if tags.get("initialised_from"):
        node["models"].append({"uri": tags["initialised_from"]})  # a local checkpoint
    return node


def lineage(uri: str) -> dict:
    return model_node(resolve(uri))


def _short(digest: str) -> str:
    return digest[:12]


def _dataset_lines(node: dict, seen: set[str]) -> tuple[str, list]:
    source = node["source"]
    text = f"dataset {node['path']}  md5 {_short(node['md5'])}"
    if source:
        text += f"  ({source['dvc_file']} at git {source['rev'][:12]})"
    if "data_dvc_md5" in node:
        return f"{text}  (raw data, in data.dvc md5 {node['data_dvc_md5']})", []
    if "run" not in node:
        return f"{text}  (no run in this tracking store wrote it)", []
    run = node["run"]["run_id"]
    text += f"  <- run {run[:8]} ({node['run']['stage']})"
    if run in seen:
        return f"{text}, inputs shown above", []
    seen.add(run)
    return text, [_dataset_lines(d, seen) for d in node["inputs"]]


def _model_lines(node: dict, seen: set[str]) -> tuple[str, list]:
    if node.get("cycle"):
        return f"from {node['uri']}  (a cycle in the links: shown above)", []
    if "run_id" not in node:
        return f"from {node['uri']}  (outside the registry)", []
    aliases = f" @{' @'.join(node['aliases'])}" if node["aliases"] else ""
    head = f"{node['uri']}{aliases}  run {node['run_id'][:8]} ({node['stage']})"
    if seen:
        head = f"from {head}"
    if node["uri"] in seen:
        return f"{head}  (shown above)", []
    seen.add(node["uri"])
    dirty = " +uncommitted changes" if node["git_dirty"] == "true" else ""
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in node["metrics"].items()) or "-"
    children: list[tuple[str, list]] = [
        (
            f"code: git {node['git_commit'][:12]}{dirty}, params.yaml md5 "
            f"{_short(node['params_digest'])}, data.dvc md5 {node['data_dvc_md5']}",
            [],
        ),
        (f"metrics: {metrics}", []),
        *([(f"rewards: {node['rewards']}", [])] if node.get("rewards") else []),
    ]
    children += [_dataset_lines(d, seen) for d in node["datasets"]]
    children += [_model_lines(m, seen) for m in node["models"]]
    return head, children


def render(node: dict) -> str:
    """The lineage as an indented tree, one line per model, dataset or fact."""
    lines = []

    def walk(item: tuple[str, list], prefix: str, last: bool, root: bool) -> None:
        text, children = item
        lines.append(text if root else f"{prefix}{'└── ' if last else '├── '}{text}")
        inner = "" if root else prefix + ("    " if last else "│   ")
        for i, child in enumerate(children):
            walk(child, inner, i == len(children) - 1, False)

    walk(_model_lines(node, set()), "", True, True)
    return "\n".join(lines) + "\n"


def _git_show(root: Path, commit: str, path: str) -> bytes | None:
    """A file at a commit; commit is a checked hex id, and --end-of-options keeps any
    argument from being read as an option."""
    out = subprocess.run(
        ["git", "show", "--end-of-options", f"{commit}:{path}"], cwd=root, capture_output=True
    )
    return out.stdout if out.returncode == 0 else None


def dvc_md5(text: bytes) -> str | None:
    """The md5 a .dvc file records for its first out (None when it records none)."""
    try:
        return str(parse_yaml(text, "a .dvc file")["outs"][0]["md5"])
    except (UserError, KeyError, IndexError, TypeError):
        return None


def has_dvc_remote(root: Path) -> bool:
    config = configparser.ConfigParser()
    config.read(root / ".dvc" / "config")
    return config.has_option("core", "remote")


def reproduce(uri: str, root: Path) -> dict:
    """How to rebuild a registered model: the commit, the DVC commands, what to expect, and
    anything that says the commit alone will not be enough."""
    version = resolve(uri)
    run = registry_client().get_run(version.run_id)
    tags = run.data.tags
    stage, commit = tags.get("stage", ""), tags.get(MLFLOW_GIT_COMMIT, "")
    warnings = []
    if not COMMIT.fullmatch(commit):
        warnings.append(f"git commit tag {commit[:40]!r} is not a commit id: no checkout to give")
        commit = ""
    if tags.get("git_dirty") == "true":
        warnings.append(
            "the run had uncommitted changes to tracked files: that commit alone may not rebuild it"
        )
    params = _git_show(root, commit, "params.yaml") if commit else None
    if params is None:
        if commit:
            warnings.append(f"commit {commit[:12]} is not in the repository at {root}")
    elif hashlib.md5(params).hexdigest() != tags.get("params_digest"):
        warnings.append("params.yaml at that commit differs from the one the run used")
    data_dvc = _git_show(root, commit, "data.dvc") if commit else None
    if data_dvc is not None and dvc_md5(data_dvc) != tags.get("data_dvc_md5"):
        warnings.append("data.dvc at that commit names another data version than the run used")
    fetch = "dvc pull data.dvc" if has_dvc_remote(root) else "dvc checkout data.dvc"
    try:
        logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/metrics.json")
        expected = {k: v for k, v in logged.items() if k not in HOW_IT_RAN}
    except Exception:  # a run from before stages logged their metrics.json
        expected = {}
        warnings.append("the run logged no metrics.json to compare a rebuild against")
    return {
        "uri": f"models:/{version.name}/{version.version}",
        "run_id": version.run_id,
        "stage": stage,
        "git_commit": commit,
        "data_dvc_md5": tags.get("data_dvc_md5", ""),
        # shell-quoted: tag values are data, never command text
        "commands": [
            *([f"git checkout {commit}"] if commit else []),  # a checked hex id
            fetch,
            f"dvc repro {shlex.quote(stage)}",
        ],
        "expected_metrics": expected,
        "expected_model_digest": version.tags.get("model_digest", ""),
        "warnings": warnings,
    }
