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


# prompt, chosen + EOS, rejected + EOS, margin (NaN: a tie, which ranks neither)
Pair = tuple[list[int], list[int], list[int], float]


def reward_pairs(
    tokenizer,
    prompts: list[str],
    chosen: list[str],
    rejected: list[str],
    margins: list[float],
    max_length: int,
) -> list[Pair | None]:
    """Each pair's prompt and two responses (each with EOS), the prompt cut from the left so
    that it fits max_length with the longer response; None where a response cannot fit."""
    q, c = encode_pairs(tokenizer, prompts, chosen)
    r = encode_pairs(tokenizer, prompts, rejected)[1]
    out: list[Pair | None] = []
    for query, a, b, m in zip(q, c, r, margins):
        longer = max(len(a), len(b))
        out.append(None if longer >= max_length else (query[longer - max_length :], a, b, m))
    return out


def pair_width(pair: Pair) -> int:
    """Tokens in the pair's row of a pair_batch: prompt, chosen and rejected."""
    return len(pair[0]) + len(pair[1]) + len(pair[2])


def pair_batch(pairs: list[Pair], pad_id: int) -> dict:
    """Each pair as one right-padded row, prompt + chosen + rejected, scored at both EOS.

    The rejected response attends to the prompt but not to the chosen one, and its positions
    follow the prompt's, so each response is scored as it would be alone after its prompt,
    with the prompt computed once instead of twice. `pair_mask` [B, 1, T, T] says which
    positions each may attend to (padding: itself only, so no softmax row is empty); `ends`
    [B, 2] holds the chosen and the rejected EOS positions."""
    width = max(map(pair_width, pairs))
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(pairs), 1, 1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    ends = torch.empty(len(pairs), 2, dtype=torch.long)
    for i, pair in enumerate(pairs):
        q, c, r, _ = pair
        split, n = len(q) + len(c), pair_width(pair)
        ids[i, :n] = torch.tensor(q + c + r, dtype=torch.long)
        positions[i, :n] = torch.cat([torch.arange(split), torch.arange(len(q), len(q) + len(r))])
        allowed[i, :n, :n] = causal[:n, :n]
        allowed[i, split:n, len(q) : split] = False  # rejected tokens do not see the chosen
        ends[i] = torch.tensor([split - 1, n - 1])
    return {
        "input_ids": ids,
        "position_ids": positions,
        "pair_mask": allowed[:, None],
        "ends": ends,
        "margin": torch.tensor([m for *_, m in pairs], dtype=torch.float),
    }


@torch.no_grad()
def response_nll(model, rows, pad_id: int, device, batch_size: int = 64) -> torch.Tensor:
    """[N, 2] each row's summed loss on its response tokens, and their number."""
    model.eval()
    found = []
    for i in range(0, len(rows), batch_size):
        batch = {k: t.to(device) for k, t in sft_batch(rows[i : i + batch_size], pad_id).items()}
        labels = batch.pop("labels")[:, 1:]  # [B, T-1]: token t+1 is predicted at position t
        logits = model(**batch).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )  # [B, T-1], 0 where ignored
        found.append(torch.stack([loss.sum(1), (labels != IGNORE).sum(1).float()], 1).cpu())
    return torch.cat(found) if found else torch.zeros(0, 2)


def response_loss(model, rows, pad_id: int, device, batch_size: int = 64) -> float:
    """Mean per-token loss on the responses of held-out rows."""
    total, count = response_nll(model, rows, pad_id, device, batch_size).sum(0).tolist()
    return total / max(1.0, count)
