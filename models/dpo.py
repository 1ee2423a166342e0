"""Direct preference optimisation: the policy learns from preference pairs directly, against a
frozen reference, with no reward model in the loop.

  DPO (Rafailov et al., 2023)  -log sigmoid(beta * h)
  IPO (Azar et al., 2023)      (h - 1 / (2 beta))^2
  where h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)), summed over each
  response's tokens. beta * (log pi(y) - log ref(y)) is the implicit reward of a response.

Shapes: B pairs; a batch holds the B chosen rows, then the B rejected rows, [2B, T].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.models.batching import IGNORE, encode_pairs, labelled_row, sft_batch
from rlhf.models.train import PairLoss

Row = tuple[list[int], list[int]]  # (ids, labels): an SFT row, the response labelled
PairRows = tuple[Row, Row, float, float]  # chosen, rejected, and their reference log-probs


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over each row's labelled tokens: logits [N, T, V] -> [N]."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * mask).sum(-1)


def preference_logits(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """h [B]: how much more the policy than the reference prefers the chosen response."""
    return (chosen - ref_chosen) - (rejected - ref_rejected)


def dpo_loss(h: torch.Tensor, beta: float, kind: str = "dpo") -> torch.Tensor:
    """Mean loss over the pairs, from their preference logits h."""
    if kind == "dpo":
        return -F.logsigmoid(beta * h).mean()
    if kind == "ipo":
        return ((h - 1 / (2 * beta)) ** 2).mean()
    raise ValueError(f"unknown DPO loss {kind!r} (dpo | ipo)")


def preference_rows(
    tokenizer,
    prompts: list[str],
    chosen: list[str],
    rejected: list[str],
    max_length: int,
    contexts=None,
) -> tuple[list[tuple[Row, Row]], int]:
    """(chosen row, rejected row) of each pair whose two responses fit max_length, and how
    many pairs were dropped because one did not."""
    queries, chosen_ids = encode_pairs(tokenizer, prompts, chosen, contexts)
    _, rejected_ids = encode_pairs(tokenizer, prompts, rejected, contexts)
    rows, dropped = [], 0
    for q, c, r in zip(queries, chosen_ids, rejected_ids):
        row_c, row_r = labelled_row(q, c, max_length), labelled_row(q, r, max_length)
        if row_c is None or row_r is None:
            dropped += 1
            continue
        rows.append((row_c, row_r))
    return rows, dropped


def with_reference(ref, rows: list[tuple[Row, Row]], pad_id: int) -> list[PairRows]:
    """Each pair with the reference's log-probs of its two responses, computed once."""
    ref_c = row_logprobs(ref, [c for c, _ in rows], pad_id)
    ref_r = row_logprobs(ref, [r for _, r in rows], pad_id)
    return [(c, r, lc, lr) for (c, r), lc, lr in zip(rows, ref_c, ref_r)]


def pair_rows_batch(pairs: list[PairRows], pad_id: int) -> dict:
    """Chosen rows then rejected rows, right-padded, with labels and reference log-probs."""
    batch = sft_batch([c for c, _, _, _ in pairs] + [r for _, r, _, _ in pairs], pad_id)
    ref = [rc for _, _, rc, _ in pairs] + [rr for _, _, _, rr in pairs]
    return batch | {"ref_logprobs": torch.tensor(ref, dtype=torch.float)}


@torch.no_grad()
def row_logprobs(model, rows: list[Row], pad_id: int, batch_size: int = 64) -> list[float]:
    """Sequence log-probs of SFT rows under a model (the reference's, computed once)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(rows), batch_size):
        batch = {k: t.to(device) for k, t in sft_batch(rows[i : i + batch_size], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out += sequence_logprobs(logits, batch["labels"]).tolist()
    return out


def preference_loss(beta: float, kind: str = "dpo") -> PairLoss:
    """The Trainer's loss on a pair_rows_batch (rlhf.models.train.train's `loss`)."""

    def loss(model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logprobs, ref = sequence_logprobs(logits, batch["labels"]), batch["ref_logprobs"]  # [2B]
        b = len(logprobs) // 2
        return dpo_loss(preference_logits(logprobs[:b], logprobs[b:], ref[:b], ref[b:]), beta, kind)

    return loss


def preference_accuracy(model, pairs: list[PairRows], pad_id: int) -> float:
    """Share of pairs whose implicit reward ranks the chosen response above the rejected one
    (h > 0; a policy equal to its reference scores 0)."""
    chosen = torch.tensor(row_logprobs(model, [c for c, _, _, _ in pairs], pad_id))
    rejected = torch.tensor(row_logprobs(model, [r for _, r, _, _ in pairs], pad_id))
    ref_c, ref_r = (torch.tensor([p[i] for p in pairs]) for i in (2, 3))
    return (preference_logits(chosen, rejected, ref_c, ref_r) > 0).float().mean().item()
