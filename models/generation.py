"""Batched sampling with a KV cache, response masks, and log-probabilities of responses."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from rlhf.models.errors import InputError
from rlhf.models.tokenizer import format_prompt


@dataclass
class Samples:
    query_ids: torch.Tensor  # [B, Q] left-padded prompts
    query_mask: torch.Tensor  # [B, Q]
    response_ids: torch.Tensor  # [B, R] sampled tokens, PAD after EOS
    response_mask: torch.Tensor  # [B, R] 1 up to and including the first EOS
    has_eos: torch.Tensor  # [B] bool: the response ended by itself

    def select(self, idx: torch.Tensor) -> Samples:
        return Samples(*(getattr(self, f.name)[idx] for f in fields(self)))

    def model_inputs(self) -> dict:
        """Prompt + response as one left-padded sequence, with positions that skip padding;
        logits only where they predict a response token (the prompt's would be thrown away)."""
        mask = torch.cat([self.query_mask, self.response_mask], 1)
        return {
            "input_ids": torch.cat([self.query_ids, self.response_ids], 1),
            "attention_mask": mask,
            "position_ids": position_ids(mask),
            "logits_to_keep": self.response_ids.shape[1] + 1,
        }

    def response_part(self, x: torch.Tensor) -> torch.Tensor:
        """The positions of x [B, T or R + 1, ...] that predict the response tokens: [B, R, ...]."""
        return x[:, -self.response_ids.shape[1] - 1 : -1]


def response_mask(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of real response tokens (through the first EOS) and whether an EOS was emitted."""
    is_eos = response_ids == eos_id
    eos_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # an EOS strictly earlier
    return (~eos_before).long(), is_eos.any(1)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so a prompt reads the same whatever its batch."""
    return (mask.cumsum(1) - 1).clamp(min=0)


STATIC_PAD = 32  # prompt width granularity under a static cache (one compile per width)


def prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Each prompt rendered by the chat template, as token ids."""
    texts = [format_prompt(tokenizer, p) for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def prompt_budget(model, max_new_tokens: int) -> int:
    """Tokens a prompt may keep so that the response fits the model's positions."""
    budget = int(model.config.max_position_embeddings) - max_new_tokens
    if budget <= 0:
        raise InputError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"{model.config.max_position_embeddings} positions"
        )
    return budget


def prompts_cut(tokenizer, prompts: list[str], budget: int) -> int:
    """How many prompts sampling cuts to fit budget tokens."""
    return sum(len(q) > budget for q in prompt_ids(tokenizer, prompts))


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    device: torch.device,
    static_cache: bool | None = None,
    synced: bool = False,
) -> Samples:
    """Sample one response per prompt: left padding, KV cache, pure temperature sampling.

    static_cache (default: on CUDA) preallocates the cache, which lets transformers compile
    the decoding step; prompts are then padded to a multiple of STATIC_PAD tokens, so
    batches of varied prompt lengths reuse a few compiled shapes instead of recompiling.
    synced: the model is sharded over processes (FSDP), so every process runs decoding
    steps until all processes' responses have ended (no compiled static cache then). A prompt
    longer than the model's positions leave beside max_new_tokens loses its start."""
    static = device.type == "cuda" and not synced if static_cache is None else static_cache
    budget = prompt_budget(model, max_new_tokens)
    ids = [q[-budget:] for q in prompt_ids(tokenizer, prompts)]  # a long prompt loses its start
    enc = tokenizer.pad(
        {"input_ids": ids},
        padding=True,
        pad_to_multiple_of=STATIC_PAD if static else None,
        return_tensors="pt",
    ).to(device)
    with warnings.catch_warnings():
        # a sharded model's decoding steps return the KV cache's views; nothing runs
        # backward through generation, so FSDP's warning about in-place ops on them is moot
        warnings.filterwarnings("ignore", "FSDP2-wrapped module .* returned a view tensor")
        out = model.generate(
            **enc,
            cache_implementation="static" if static else None,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            synced_gpus=synced,
        )
    response = out[:, enc["input_ids"].shape[1] :]
    mask, has_eos = response_mask(response, tokenizer.eos_token_id)
    response = response.masked_fill(mask == 0, tokenizer.pad_token_id)
    return Samples(enc["input_ids"], enc["attention_mask"], response, mask, has_eos)


def response_logits(model, s: Samples) -> torch.Tensor:
    """Logits predicting each response token under a plain causal LM: [B, R, V]."""
    return s.response_part(model(**s.model_inputs()).logits).float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(token) under logits / temperature: [B, R]."""
    logp = F.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = F.log_softmax(logits / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def repack_right(s: Samples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + response without padding between them, right-padded: the reward model's input."""
    rows = []
    for qi, qm, ri, rm in zip(s.query_ids, s.query_mask, s.response_ids, s.response_mask):
        rows.append(torch.cat([qi[qm.bool()], ri[rm.bool()]]))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=s.query_ids.device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


def decode_responses(tokenizer, s: Samples) -> list[str]:
    return [
        tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip()
        for r, m in zip(s.response_ids, s.response_mask)
    ]
