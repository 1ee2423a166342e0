"""The Prefect deployments: which flow, on which schedule, on which kind of worker.

    pipeline        the whole pipeline, on demand                            CPU pool
    pipeline-gpu    the same flow for GPU workers (device: auto picks CUDA)  GPU pool
    feedback-loop   one loop iteration on loop.cron / loop.interval_seconds  GPU pool (it trains)
    compare         the alignment methods side by side, on demand            GPU pool (it trains)

`rlhf serve` serves `pipeline`, `feedback-loop` and `compare` from its own process (no pool,
no worker); `rlhf deploy --pool cpu --gpu-pool gpu` registers all four for workers started
with `prefect worker start --pool ...` (here or on other machines that have the package
installed and the project folder at the same path).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prefect import Flow

from rlhf.core.settings import Settings, load_settings


@dataclass(frozen=True)
class Spec:
    name: str
    entrypoint: str  # "<module>.<flow function>" in the installed package (a worker imports it)
    description: str
    scheduled: bool = False  # on the loop's schedule
    gpu: bool = False  # goes to the GPU pool
    served: bool = True  # part of `rlhf serve` (which runs everything on this machine)

    def flow(self) -> Flow:
        module, _, name = self.entrypoint.rpartition(".")
        return getattr(importlib.import_module(module), name)


SPECS = (
    Spec(
        "pipeline",
        "rlhf.flows.pipeline.rlhf_pipeline",
        "The whole pipeline; unchanged stages are cached.",
    ),
    Spec(
        "pipeline-gpu",
        "rlhf.flows.pipeline.rlhf_pipeline",
        "The whole pipeline on a GPU worker (device: auto trains on CUDA with bf16).",
        gpu=True,
        served=False,
    ),
    Spec(
        "feedback-loop",
        "rlhf.flows.loop.feedback_loop",
        "Import new labels, retrain and judge when enough arrived, write the next batch to label.",
        scheduled=True,
        gpu=True,
    ),
    Spec(
        "compare",
        "rlhf.flows.compare.rlhf_compare",
        "Train compare.methods from the same SFT and reward model; one scoreboard.",
        gpu=True,
    ),
)


def schedule(settings: Settings) -> dict:
    cfg = settings.loop
    return {"cron": cfg.cron} if cfg.cron else {"interval": cfg.interval_seconds}


def served(params_path: str | Path) -> list:
    """RunnerDeployments for `rlhf serve`, bound to this params file."""
    settings = load_settings(params_path)
    params = {"params_path": str(Path(params_path).resolve())}
    return [
        spec.flow().to_deployment(
            spec.name,
            parameters=params,
            concurrency_limit=1,
            description=spec.description,
            tags=["rlhf"],
            **(schedule(settings) if spec.scheduled else {}),
        )
        for spec in SPECS
        if spec.served
    ]


def deploy(params_path: str | Path, pool: str, gpu_pool: str | None) -> list[str]:
    """Register the deployments for workers; without a GPU pool, all but pipeline-gpu go to
    `pool`. Workers run them in the project folder (Prefect's pull step records it)."""
    settings = load_settings(params_path)
    root = settings.path().resolve()
    params = {"params_path": str(Path(params_path).resolve().relative_to(root))}
    names = []
    for spec in SPECS:
        if spec.name == "pipeline-gpu" and gpu_pool is None:
            continue
        # from a synchronous caller from_source returns the flow itself, not a coroutine
        flow = cast(Flow, Flow.from_source(source=str(root), entrypoint=spec.entrypoint))
        flow.deploy(
            spec.name,
            work_pool_name=gpu_pool if spec.gpu and gpu_pool else pool,
            build=False,
            push=False,
            parameters=params,
            concurrency_limit=1,
            description=spec.description,
            tags=["rlhf"],
            print_next_steps=False,
            **(schedule(settings) if spec.scheduled else {}),
        )
        names.append(f"{flow.name}/{spec.name}")
    return names
