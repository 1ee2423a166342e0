"""Causal LM construction and loading, devices, precision and seeding."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from rlhf.models.config import Architecture
from rlhf.models.errors import InputError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda, but torch finds no CUDA device here (set device: auto)")
    return torch.device(requested)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; on CPU full precision (bf16 matmuls are slow there)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def build_causal_lm(
    tokenizer: PreTrainedTokenizerBase, arch: Architecture, vocab_size: int | None = None
) -> LlamaForCausalLM:
    """A Llama-style model (RMSNorm, rotary, SwiGLU) of the given shape, dropout off; its
    vocabulary the tokenizer's unless vocab_size says more."""
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    return LlamaForCausalLM(config)


def check_checkpoint_dir(path: str | Path) -> Path:
    """A local HF checkpoint folder; a clear error instead of a hub lookup when it is not."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: checkpoint directory not found (only local folders are read)")
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not a Hugging Face checkpoint (no config.json)")
    return path


def load_causal_lm(path: str | Path, tokenizer=None):
    model = AutoModelForCausalLM.from_pretrained(check_checkpoint_dir(path))
    if tokenizer is not None:
        fit_vocabulary(model, tokenizer)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def fit_vocabulary(model, tokenizer) -> None:
    """The model's embeddings grown to the tokenizer's vocabulary (load_tokenizer adds PAD to a
    checkpoint that has none), and its PAD the tokenizer's."""
    embeddings = model.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Embedding)
    if embeddings.num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id


def weights_digest(folder: str | Path) -> str:
    """A digest of the weights in a checkpoint folder's safetensors files, tensor by tensor
    (name, dtype, shape, bytes): the same weights saved again (another folder layout, other
    metadata, other shards) give the same digest, and one changed bit another."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise InputError(f"{folder}: no safetensors weights to check")
    each = {}  # tensor name -> the digest of the tensor: one tensor in memory at a time
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                tensor = f.get_tensor(name).contiguous()
                h = hashlib.sha256(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
                each[name] = h.hexdigest()
    return hashlib.sha256("".join(each[name] for name in sorted(each)).encode()).hexdigest()


def max_positions(model_or_path) -> int:
    """The longest sequence a model (or the checkpoint at a path) reads (GPT-2 names it
    n_positions, an alias)."""
    if isinstance(model_or_path, str | Path):
        return int(
            AutoConfig.from_pretrained(check_checkpoint_dir(model_or_path)).max_position_embeddings
        )
    return int(model_or_path.config.max_position_embeddings)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_threads() -> None:
    """Use every core the process may run on (containers often report fewer than the host)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, n or 1))


def start_run(seed: int, device: str) -> torch.device:
    """The block every training stage opens with: seeds, CPU threads, the device."""
    seed_everything(seed)
    set_threads()
    return pick_device(device)
