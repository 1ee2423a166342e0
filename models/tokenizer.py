"""Byte-level BPE tokenizer trained on the corpus, and the prompt format shared by all stages."""

from __future__ import annotations

from collections.abc import Iterable

EOS = "<|endoftext|>"
PAD = "<pad>"  # distinct from EOS: PPO masks after EOS and must tell the two apart

# How a prompt is laid out before the response; SFT, the reward model, PPO and evaluation all
# use this one function so they score and generate the same text.
PROMPT_FORMAT = "Human: {prompt}\nAssistant:"


def format_prompt(prompt: str) -> str:
    return PROMPT_FORMAT.format(prompt=prompt)


def format_response(response: str) -> str:
    return " " + response.strip()


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE and wrap it as a transformers fast tokenizer (left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=EOS, eos_token=EOS,
                                   unk_token=EOS, pad_token=PAD, padding_side="left")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    from models.lm import check_checkpoint_dir

    tok = AutoTokenizer.from_pretrained(check_checkpoint_dir(path))
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # Checkpoints such as GPT-2 ship without PAD; PPO needs one distinct from EOS.
        tok.add_special_tokens({"pad_token": PAD})
    tok.padding_side = "left"
    return tok
