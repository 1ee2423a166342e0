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

from rlhf.models.batching import IGNORE, sft_batch

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
