"""Tiny random checkpoints of the architectures a team brings (GPT-2, GPT-NeoX / Pythia, Qwen2,
Llama), each with a tokenizer shaped like its family's: its own special tokens, PAD or none,
BOS or none, a chat template or none. Built here from configs, never downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INST = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
    " [/INST]{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% else %}"
    "<<SYS>>{{ m['content'] }}<</SYS>>{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class Family:
    """How a family's tokenizer is set up."""

    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    template: str | None


FAMILIES = {
    # GPT-2: one special token, no PAD, no chat template
    "gpt2": Family(("<|endoftext|>",), "<|endoftext|>", "<|endoftext|>", None, None),
    # GPT-NeoX (Pythia): <|endoftext|> and a padding token it does not name as PAD
    "gpt_neox": Family(
        ("<|endoftext|>", "<|padding|>"), "<|endoftext|>", "<|endoftext|>", None, None
    ),
    # Qwen2 instruct: no BOS, ChatML, EOS <|im_end|>, PAD <|endoftext|>
    "qwen2": Family(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>", "<|endoftext|>", CHATML
    ),
    # Llama-2 chat: <s> </s>, no PAD, [INST] template
    "llama": Family(("<unk>", "<s>", "</s>"), "<s>", "</s>", None, INST),
}


def family_tokenizer(name: str, texts: list[str], vocab_size: int = 320):
    fam = FAMILIES[name]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(fam.specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=fam.bos, eos_token=fam.eos, pad_token=fam.pad
    )
    tok.chat_template = fam.template
    return tok


def family_config(name: str, tok, positions: int = 128):
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    if name == "gpt2":
        return GPT2Config(
            n_layer=2, n_embd=32, n_head=2, n_positions=positions, vocab_size=len(tok), **ids
        )
    if name == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=positions,
            vocab_size=len(tok),
            **ids,
        )
    config = Qwen2Config if name == "qwen2" else LlamaConfig
    return config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=positions,
        vocab_size=len(tok),
        **ids,
    )


def tiny_checkpoint(name: str, folder: Path, texts: list[str]) -> Path:
    """A random model of family `name` and its tokenizer, saved as a HF checkpoint folder."""
    tok = family_tokenizer(name, texts)
    model = AutoModelForCausalLM.from_config(family_config(name, tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
