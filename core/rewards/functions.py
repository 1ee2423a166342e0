"""The reward functions of a run, started in a worker process (rlhf.core.rewards.worker) and
called on batches of completions: each batch's scores per function, or one line naming the
function, the sample and the cause, before anything is written.

  scores    {name: [n] floats}, NaN where a function had no opinion (None)

How they weigh in beside the reward model: rlhf.models.rollout.FunctionScores.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.core.io import digest_path
from rlhf.core.pipeline.codedeps import local_files
from rlhf.core.rewards.worker import serve
from rlhf.core.settings import Rewards, Settings, UserError
from rlhf.models.chat import conversation

SHOWN = 60  # characters of a completion an error line quotes
START_SECONDS = 60.0  # to start the worker and import the functions' modules


def column(name: str) -> str:
    """A function's column in samples and its metric: reward_<name>."""
    return f"reward_{name}"


class RewardFunctions:
    """The settings' reward functions, running in a worker process while the block runs."""

    def __init__(self, cfg: Rewards, root: Path):
        self.cfg, self.root = cfg, root
        self.weights = {f.name: f.weight for f in cfg.functions}
        self.specs = {f.name: f.fn for f in cfg.functions}

    def __enter__(self) -> RewardFunctions:
        mp = multiprocessing.get_context("spawn")  # no copy of the stage's threads and tensors
        self.conn, child = mp.Pipe()
        plan = [(f.name, f.fn, f.args) for f in self.cfg.functions]
        self.proc = mp.Process(target=serve, args=(child, plan, str(self.root)), daemon=True)
        self.proc.start()
        child.close()
        reply = self.receive(START_SECONDS, None, [])
        if reply[0] != "ready":
            raise self.failure(reply, [])
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()
        self.proc.kill()
        self.proc.join()

    def scores(
        self, prompts: list[str], completions: list[str], fields: dict[str, list]
    ) -> dict[str, np.ndarray]:
        """Each function's score of each completion (prompts as text, fields: the prompt
        records' other columns, one value per completion)."""
        messages = [conversation(p) for p in prompts]
        self.conn.send((messages, completions, fields))
        out = {}
        for name in self.specs:
            reply = self.receive(self.cfg.timeout_seconds, name, completions)
            if reply[0] != "done":
                raise self.failure(reply, completions)
            out[name] = np.asarray(reply[2], dtype=float)
        return out

    def receive(self, timeout: float, name: str | None, completions: list[str]) -> tuple:
        if not self.conn.poll(timeout):
            self.proc.kill()
            what = (
                f"took longer than rewards.timeout_seconds {timeout:g} s"
                if name
                else (f"did not start within {timeout:g} s")
            )
            raise UserError(f"{self.where(name)}: {what} on a batch of {len(completions)}")
        try:
            return self.conn.recv()
        except EOFError:
            raise UserError(
                f"{self.where(name)}: its worker process ended (exit code {self.proc.exitcode})"
            ) from None

    def failure(self, reply: tuple, completions: list[str]) -> UserError:
        _, name, index, cause = reply
        sample = ""
        if index is not None:
            text = completions[index]
            sample = f" sample {index} ({text[:SHOWN]!r}{'…' if len(text) > SHOWN else ''}):"
        return UserError(f"{self.where(name)}:{sample} {cause}")

    def where(self, name: str | None) -> str:
        if name is None:
            return "rewards.functions"
        return f"rewards.functions {name} ({self.specs[name]})"


@contextlib.contextmanager
def reward_functions(settings: Settings) -> Iterator[RewardFunctions | None]:
    """The settings' functions, running while the block runs; None when there are none."""
    if not settings.rewards.functions:
        yield None
        return
    with RewardFunctions(settings.rewards, Path(settings.root)) as functions:
        yield functions


def prompt_fields(prompts: pd.DataFrame) -> dict[str, dict]:
    """prompt -> the other columns of its record (the `record` reference aside)."""
    rest = [c for c in prompts.columns if c not in ("prompt", "record")]
    rows = prompts[rest].astype(object).where(prompts[rest].notna(), None).to_dict("records")
    return dict(zip(prompts["prompt"], rows))


def fields_of(prompts: list[str], fields: dict[str, dict]) -> dict[str, list]:
    """The records' other columns for a batch: column -> one value per prompt."""
    names = next(iter(fields.values()), {}).keys()
    return {k: [fields[p][k] for p in prompts] for k in names}


def score_table(
    samples: pd.DataFrame, functions: RewardFunctions, fields: dict[str, dict]
) -> pd.DataFrame:
    """samples (prompt and response columns) with a reward_<name> column per function."""
    prompts, texts = samples["prompt"].tolist(), samples["response"].tolist()
    found = functions.scores(prompts, texts, fields_of(prompts, fields))
    return samples.assign(**{column(k): v for k, v in found.items()})


def weighted_sum(
    functions: RewardFunctions, fields: dict[str, dict]
) -> Callable[[list[str], list[str]], list[float]]:
    """(prompts, completions) -> the functions' weighted sum per completion (None counting 0, as
    in training): what decides without a reward model. fields: prompt -> its record's columns."""

    def score(prompts: list[str], completions: list[str]) -> list[float]:
        found = functions.scores(prompts, completions, fields_of(prompts, fields))
        total = np.zeros(len(completions))
        for name, values in found.items():
            total += functions.weights[name] * np.nan_to_num(values, nan=0.0)
        return total.tolist()

    return score


def provenance(settings: Settings) -> str:
    """Which functions with which weights and code produced a policy: "model×w; name=fn×w@digest",
    the digest over the files of the function's module and the project modules it imports."""
    cfg = settings.rewards
    parts = [f"model×{cfg.model_weight:g}"]
    for f in cfg.functions:
        files = local_files(f.fn.partition(":")[0], Path(settings.root))
        digest = hashlib.md5("".join(digest_path(p) for p in files).encode()).hexdigest()
        parts.append(f"{f.name}={f.fn}×{f.weight:g}@{digest[:12]}")
    return "; ".join(parts)
