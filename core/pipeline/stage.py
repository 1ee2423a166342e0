"""What a stage is: its name, the inputs it reads, the params that define it, what it writes.

Kept free of heavy imports: the CLI reads the stage table (rlhf.tasks) to build `--help`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlhf.core.settings import Settings


# the stages of the learned reward: left out, with what later stages read from them, when the
# reward model has no weight (rewards.model_weight 0: the reward functions alone)
WITH_REWARD_MODEL = ("feedback", "reward", "judge")


def listed(settings: Settings, field: str) -> list:
    """A setting's value as a list (a single value becomes a list of one)."""
    value = settings.value_of(field)
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream outs it reads, as "<stage>/<out>", or "data/<folder>"
    params: tuple[str, ...]  # top-level params.yaml keys it reads
    outs: tuple[str, ...]  # paths inside artifacts/<name>/ that later stages read
    # settings fields ("section.field") naming code it loads by name ("module:object"): that
    # code is part of the stage's code dependencies like its imports
    plugins: tuple[str, ...] = ()
    # settings fields naming a file or folder it reads (relative to the project), digested into
    # its cache key like its needs
    named: tuple[str, ...] = ()
    # how its data inputs are used, as MLflow's dataset context shows it
    context: str = "training"
    # the model it registers as <prefix>-<registers> (none: it registers none), and the
    # transformers task the logged model serves
    registers: str | None = None
    model_task: str = "text-generation"
    # trains the policy method settings name (rlhf.core.settings.METHODS): the method adds its
    # own section to params, its own inputs to needs and its trainer to the code (the runner)
    by_method: bool = False
    # inputs it reads only under some settings: (need, "section.field", value) where the
    # field's value is, or holds, value
    needs_when: tuple[tuple[str, str, str], ...] = ()
    # the few metrics that sum the stage up: its row of the run's table and of `dvc metrics
    # show` (summary.json, nested under the stage's name); a metric it did not report is left out
    headline: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"rlhf.tasks.{self.name}"

    def applies(self, settings: Settings) -> bool:
        """Whether the stage is part of a run under these settings."""
        return settings.rewards.uses_reward_model or self.name not in WITH_REWARD_MODEL

    def inputs(self, settings: Settings) -> tuple[str, ...]:
        """Everything the stage reads under these settings."""
        chosen = tuple(
            need for need, field, value in self.needs_when if value in listed(settings, field)
        )
        found = self.needs + chosen + (settings.method.needs if self.by_method else ())
        if settings.rewards.uses_reward_model:
            return found
        return tuple(need for need in found if need.split("/")[0] not in WITH_REWARD_MODEL)

    def summary(self, metrics: dict) -> dict[str, float]:
        """Its headline metrics, of those it reported (a headline entry with a * stands for
        each metric it matches: one per reward function)."""
        return {
            k: v
            for pattern in self.headline
            for k, v in metrics.items()
            if fnmatchcase(k, pattern) and isinstance(v, int | float)
        }

    def sections(self, settings: Settings) -> tuple[str, ...]:
        """The params.yaml sections that define its output under these settings."""
        if not self.by_method:
            return self.params
        return self.params + (settings.method.section, *settings.method.params)

    def code_fields(self, settings: Settings) -> tuple[str, ...]:
        """The settings fields naming code it loads under these settings."""
        return self.plugins + (settings.method.plugins if self.by_method else ())
