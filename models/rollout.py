"""The first steps of every online method's iteration, the same for each: sample responses to a
batch of prompts, then score them. Shapes: B responses, R response tokens.

  sample  left-padded prompts, KV cache, temperature; the policy in eval mode (dropout off)
  score   the reward model read at each response's EOS, normalised by its mean and std on the
          reference's own samples; a response that never ended gets a fixed penalty instead

and the reference's view of the responses, which every KL penalty compares against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import PeftModel

from rlhf.models.config import Online
from rlhf.models.distributed import Dist
from rlhf.models.generation import Samples, response_logits, sample

ScoreFn = Callable[[Samples], torch.Tensor]  # samples -> [B] raw rewards
ONE_PROCESS = Dist()


@dataclass
class Scored:
    samples: Samples
    raw: torch.Tensor  # [B] the reward model's score
    score: torch.Tensor  # [B] normalised, with the no-EOS penalty

    @property
    def stats(self) -> dict[str, float]:
        mask = self.samples.response_mask.float()
        return {
            "rm_score_raw": self.raw.mean().item(),
            "score": self.score.mean().item(),
            "response_length": mask.sum(1).mean().item(),
            "no_eos_fraction": (~self.samples.has_eos).float().mean().item(),
        }


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
    s: Samples, reward: ScoreFn, norm: tuple[float, float], no_eos_penalty: float | None
) -> Scored:
    """Each response's reward; norm: the reward's (mean, std) on the reference's samples."""
    raw = reward(s)
    score = (raw - norm[0]) / norm[1]
    if no_eos_penalty is not None:
        score = torch.where(s.has_eos, score, torch.full_like(score, no_eos_penalty))
    return Scored(s, raw, score)


@torch.no_grad()
def reference_logits(ref, lm, s: Samples) -> torch.Tensor:
    """The reference's logits of the responses: a frozen copy (ref), or, ref None, the policy lm
    with its LoRA adapter switched off, which is the SFT model without a second copy."""
    if ref is not None:
        return response_logits(ref, s)
    assert isinstance(lm, PeftModel), "no reference: the policy must carry a LoRA adapter"
    with lm.disable_adapter():
        return response_logits(lm, s)
