"""Token tensors for each kind of training: packed LM blocks, SFT rows, reward-model rows.

Prompt and response are tokenized separately and concatenated, exactly as PPO later samples
a response after the prompt's tokens, so every stage sees the same token boundaries.
"""

from __future__ import annotations

import torch

from models.tokenizer import format_prompt, format_response

IGNORE = -100  # label value the cross-entropy skips


def pack_blocks(docs: list[list[int]], eos_id: int, block_size: int) -> torch.Tensor:
    """Concatenate documents with EOS between them and cut into [N, block_size] blocks."""
    stream = [t for doc in docs for t in (*doc, eos_id)]
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"corpus has {len(stream)} tokens, fewer than one block ({block_size})")
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def encode_pairs(tokenizer, prompts: list[str], responses: list[str]):
    """Token ids of each formatted prompt and of each response with EOS appended."""
    q = tokenizer([format_prompt(p) for p in prompts], add_special_tokens=False)["input_ids"]
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


def sft_rows(tokenizer, prompts: list[str], responses: list[str], max_length: int):
    """(ids, n_prompt_tokens) per kept row, and how many rows were dropped for length."""
    rows, dropped = [], 0
    for q, r in zip(*encode_pairs(tokenizer, prompts, responses)):
        ids = fit_length(q, r, max_length)
        if ids is None:
            dropped += 1
        else:
            rows.append((ids, len(ids) - len(r)))
    return rows, dropped


def sft_batch(rows: list[tuple[list[int], int]], pad_id: int):
    """input_ids, attention_mask and labels with the prompt and padding masked out."""
    ids, mask = right_pad([r for r, _ in rows], pad_id)
    labels = ids.clone()
    labels[mask == 0] = IGNORE
    for i, (_, n_prompt) in enumerate(rows):
        labels[i, :n_prompt] = IGNORE
    return ids, mask, labels


def reward_rows(tokenizer, prompts: list[str], responses: list[str], max_length: int):
    """Prompt + response + EOS per row (None where it cannot fit), for right-padded scoring."""
    return [fit_length(q, r, max_length) for q, r in zip(*encode_pairs(tokenizer, prompts, responses))]


@torch.no_grad()
def response_loss(model, rows, pad_id: int, device, batch_size: int = 64) -> float:
    """Mean per-token loss on the responses of held-out rows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        ids, mask, labels = (t.to(device) for t in sft_batch(rows[i : i + batch_size], pad_id))
        n = int((labels[:, 1:] != IGNORE).sum())
        total += model(input_ids=ids, attention_mask=mask, labels=labels).loss.item() * n
        count += n
    return total / max(1, count)
