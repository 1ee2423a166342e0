"""What a stage is: its name, the inputs it reads, the params that define it, what it writes.

Kept free of heavy imports: the CLI reads the stage table (rlhf.tasks) to build `--help`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream outs it reads, as "<stage>/<out>", or "data/<folder>"
    params: tuple[str, ...]  # top-level params.yaml keys it reads
    outs: tuple[str, ...]  # paths inside artifacts/<name>/ that later stages read
    # settings fields ("section.field") naming code it loads by name ("module:object"): that
    # code is part of the stage's code dependencies like its imports
    plugins: tuple[str, ...] = ()
    # how its data inputs are used, as MLflow's dataset context shows it
    context: str = "training"

    @property
    def module(self) -> str:
        return f"rlhf.tasks.{self.name}"
