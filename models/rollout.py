"""The first steps of every online method's iteration, the same for each: sample responses to a
batch of prompts, then score them. Shapes: B responses, R response tokens.

  sample  left-padded prompts, KV cache, temperature; the policy in eval mode (dropout off)
  score   the reward model read at each response's EOS, normalised by its mean and std on the
          reference's own samples, weighted and added to the reward functions' weighted
          scores; a response that never ended gets a fixed penalty instead

and the reference's view of the responses, which every KL penalty compares against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import PeftModel

from rlhf.models.config import Online
from rlhf.models.distributed import Dist
from rlhf.models.generation import Samples, response_logits, sample

ScoreFn = Callable[[Samples], torch.Tensor]  # samples -> [B] raw rewards
ONE_PROCESS = Dist()


@dataclass(frozen=True)
class FunctionScores:
    """The reward functions' scores of a batch, and how they and the reward model weigh in."""

    scores: dict[str, torch.Tensor]  # name -> [B], NaN where the function had no opinion
    weights: dict[str, float]
    model_weight: float  # the reward model's share

    def combine(self, rm: torch.Tensor) -> torch.Tensor:
        """[B] the reward model's normalised score weighted, plus each function's (NaN: 0)."""
        total = self.model_weight * rm
        for name, values in self.scores.items():
            total = total + self.weights[name] * torch.nan_to_num(values, nan=0.0)
        return total


REWARD_MODEL_ONLY = FunctionScores({}, {}, 1.0)


@dataclass
class Scored:
    samples: Samples
    raw: torch.Tensor  # [B] the reward model's score
    score: torch.Tensor  # [B] what is optimised: normalised and combined, the no-EOS penalty
    functions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B], NaN: none

    @property
    def stats(self) -> dict[str, float]:
        mask = self.samples.response_mask.float()
        return {
            "rm_score_raw": self.raw.mean().item(),
            "score": self.score.mean().item(),
            "response_length": mask.sum(1).mean().item(),
            "no_eos_fraction": (~self.samples.has_eos).float().mean().item(),
            **{f"reward_{k}": v.nanmean().item() for k, v in self.functions.items()},
            **{f"reward_{k}_std": nanstd(v) for k, v in self.functions.items()},
        }


def nanstd(x: torch.Tensor) -> float:
    """The spread of the values that are not NaN (0 for fewer than two)."""
    x = x[~x.isnan()]
    return x.std().item() if x.numel() > 1 else 0.0


@torch.no_grad()
def sample_responses(
    lm, tok, prompts: list[str], cfg: Online, device: torch.device, dist: Dist = ONE_PROCESS
) -> Samples:
    """One response per prompt (a sharded lm decodes in step with the other processes)."""
    lm.eval()
    return sample(
        lm, tok, prompts, cfg.max_new_tokens, cfg.temperature, device, synced=dist.sharded
    )


@torch.no_grad()
def score_responses(
    s: Samples,
    reward: ScoreFn,
    norm: tuple[float, float],
    no_eos_penalty: float | None,
    functions: FunctionScores = REWARD_MODEL_ONLY,
) -> Scored:
    """Each response's reward; norm: the reward model's (mean, std) on the reference's samples."""
    raw = reward(s)
    score = functions.combine((raw - norm[0]) / norm[1])
    if no_eos_penalty is not None:
        score = torch.where(s.has_eos, score, torch.full_like(score, no_eos_penalty))
    return Scored(s, raw, score, functions.scores)


@torch.no_grad()
def reference_logits(ref, lm, s: Samples) -> torch.Tensor:
    """The reference's logits of the responses: a frozen copy (ref), or, ref None, the policy lm
    with its LoRA adapter switched off, which is the SFT model without a second copy."""
    if ref is not None:
        return response_logits(ref, s)
    assert isinstance(lm, PeftModel), "no reference: the policy must carry a LoRA adapter"
    with lm.disable_adapter():
        return response_logits(lm, s)
