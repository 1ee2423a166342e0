"""Rows and batches for each kind of training: packed LM blocks, SFT rows, reward-model pairs.

Prompt and response are tokenized separately and concatenated, exactly as PPO later samples
a response after the prompt's tokens, so every stage sees the same token boundaries. An SFT
row is (ids, labels) with label -100 on everything but the response and its EOS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhf.models.tokenizer import format_prompt, format_response

IGNORE = -100  # label value the cross-entropy skips


def pack_blocks(
    docs: list[list[int]], bos_id: int | None, eos_id: int, block_size: int
) -> torch.Tensor:
    """Documents as BOS doc EOS, concatenated and cut into [N, block_size] blocks."""
    head = () if bos_id is None else (bos_id,)
    stream = [t for doc in docs for t in (*head, *doc, eos_id)]
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"{len(stream)} tokens, fewer than one block ({block_size})")
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def encode_pairs(
    tokenizer,
    prompts: list[str],
    responses: list[str],
    contexts: Sequence[Sequence[dict]] | None = None,
):
    """Token ids of each rendered prompt (after its earlier turns, if any) and of each
    response with EOS appended."""
    contexts = contexts if contexts is not None else [()] * len(prompts)
    q = tokenizer(
        [format_prompt(tokenizer, p, c) for p, c in zip(prompts, contexts)],
        add_special_tokens=False,
    )["input_ids"]
    r = tokenizer([format_response(x) for x in responses], add_special_tokens=False)["input_ids"]
    return q, [ids + [tokenizer.eos_token_id] for ids in r]


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and attention mask, padded on the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def fit_length(query: list[int], response: list[int], max_length: int) -> list[int] | None:
    """Prompt + response within max_length by cutting the prompt's left side.

    Returns None when even the whole budget cannot hold the response with its EOS: the
    caller drops and counts that row rather than training on a response with its end cut off.
    """
    if len(response) >= max_length:
        return None
    keep = max_length - len(response)
    return query[-keep:] + response


def labelled_row(
    query: list[int], response: list[int], max_length: int
) -> tuple[list[int], list[int]] | None:
    """(ids, labels) of fit_length's row, every label but the response's IGNORE; None when
    the response does not fit."""
    ids = fit_length(query, response, max_length)
    return None if ids is None else (ids, [IGNORE] * (len(ids) - len(response)) + response)


@dataclass
class Fitted:
    rows: list[tuple[list[int], list[int]]]  # (ids, labels)
    dropped: int = 0  # the response with its EOS did not fit max_length
    truncated: int = 0  # kept with the start of the prompt (or earlier turns) cut off


def sft_rows(
    tokenizer,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    contexts: Sequence[Sequence[dict]] | None = None,
) -> Fitted:
    out = Fitted([])
    for q, r in zip(*encode_pairs(tokenizer, prompts, responses, contexts)):
        row = labelled_row(q, r, max_length)
        if row is None:
            out.dropped += 1
            continue
        out.truncated += len(row[0]) < len(q) + len(r)
        out.rows.append(row)
    return out


def examples_rows(tokenizer, examples, max_length: int) -> Fitted:
    """sft_rows of a table of examples (prompt, response, context as JSON)."""
    return sft_rows(
        tokenizer,
        list(examples["prompt"]),
        list(examples["response"]),
        max_length,
        [json.loads(c) for c in examples["context"]],
    )


def pack_rows(rows: list[tuple[list[int], list[int]]], max_length: int):
    """Consecutive rows joined into rows of at most max_length (none is split)."""
    packed: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    for i, lab in rows:
        if ids and len(ids) + len(i) > max_length:
            packed.append((ids, labels))
            ids, labels = [], []
        ids, labels = ids + i, labels + lab
    if ids:
        packed.append((ids, labels))
    return packed


def sft_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """input_ids, attention_mask and labels, right-padded (padding labelled -100)."""
    ids, mask = right_pad([i for i, _ in rows], pad_id)
    labels = torch.full_like(ids, IGNORE)
    for n, (_, lab) in enumerate(rows):
        labels[n, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def block_batch(blocks: list[torch.Tensor]) -> dict:
    x = torch.stack(blocks)
    return {"input_ids": x, "labels": x}


def reward_rows(tokenizer, prompts: list[str], responses: list[str], max_length: int):
    """Prompt + response + EOS per row (None where it cannot fit), for right-padded scoring."""
    return [
        fit_length(q, r, max_length) for q, r in zip(*encode_pairs(tokenizer, prompts, responses))
    ]


def pair_batch(pairs: list[tuple[list[int], list[int], float]], pad_id: int) -> dict:
    """Chosen rows then rejected rows in one right-padded batch, and each pair's margin."""
    ids, mask = right_pad([c for c, _, _ in pairs] + [r for _, r, _ in pairs], pad_id)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "margin": torch.tensor([m for _, _, m in pairs], dtype=torch.float),
    }


@torch.no_grad()
def response_loss(model, rows, pad_id: int, device, batch_size: int = 64) -> float:
    """Mean per-token loss on the responses of held-out rows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = {k: t.to(device) for k, t in sft_batch(rows[i : i + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += model(**batch).loss.item() * n
        count += n
    return total / max(1, count)
