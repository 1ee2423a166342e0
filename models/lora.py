"""LoRA adapters (peft) on any stage's model: the adapter trains, the weights under it stay
frozen, and what is saved is a plain checkpoint of the merged weights with the adapter beside it
(model/adapter), so every later stage and `transformers` load it as any other model."""

from __future__ import annotations

import copy
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from rlhf.models.config import Lora

ADAPTER = "adapter"  # the adapter's folder inside a saved model's


def with_adapter(model, cfg: Lora, classifier: bool = False) -> PeftModel:
    """model with a fresh LoRA adapter (its update starts at zero: the model computes what it
    did). A classifier's score head trains whole beside it."""
    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type=TaskType.SEQ_CLS if classifier else TaskType.CAUSAL_LM,
        modules_to_save=["score"] if classifier else None,
    )
    return get_peft_model(model, config)


def merged(model):
    """The model as plain weights: an adapter merged in, on a copy (training may go on)."""
    if not isinstance(model, PeftModel):
        return model
    return copy.deepcopy(model).merge_and_unload()


def save_model(model, tokenizer, folder: Path) -> None:
    """A plain checkpoint of the merged weights, and the adapter (if any) in folder/adapter."""
    merged(model).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(folder / ADAPTER))


def trainable_fraction(model) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(1, total)
