"""Byte-level BPE tokenizer trained on the corpus, and the chat format shared by all stages.

The format lives in the tokenizer as its chat template, so a model saved here carries it and
`tokenizer.apply_chat_template` renders the same text as the pipeline:

    <|startoftext|>Human: {prompt}\nAssistant: {response}<|endoftext|>

(with `chat_tokens`, <|user|> and <|assistant|> replace "Human:" and "Assistant:"). Every
stage renders a prompt with format_prompt and appends " {response}" + EOS, so SFT, the
reward model, PPO and evaluation score and generate the same tokens. A checkpoint imported
without a template falls back to the same layout without BOS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rlhf.models.errors import InputError
from rlhf.models.lm import check_checkpoint_dir

BOS = "<|startoftext|>"  # starts every document and every conversation
EOS = "<|endoftext|>"  # ends them; packing puts it between documents
PAD = "<pad>"  # distinct from EOS: PPO masks after EOS and must tell the two apart
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
ROLE_WORDS = {"system": "System:", "user": "Human:", "assistant": "Assistant:"}
FALLBACK_FORMAT = "Human: {prompt}\nAssistant:"


def chat_template(roles: dict[str, str]) -> str:
    """Jinja: each turn as '<role> <content>\\n'; an assistant turn ends in EOS instead."""
    role = "{% set role = " + repr(roles) + " %}"
    return (
        role + "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] not in role %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"  # noqa: E501
        "{{ role[m['role']] }} {{ m['content'] | trim }}"
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% if not loop.last %}{{ '\\n' }}{% endif %}"  # noqa: E501
        "{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ role['assistant'] }}{% endif %}"
    )


def format_prompt(tokenizer, prompt: str, context: Sequence[dict] = ()) -> str:
    """The text a response follows: earlier turns (role/content dicts), the user's prompt,
    the assistant's cue."""
    messages = [*context, {"role": "user", "content": prompt}]
    if tokenizer.chat_template is None:
        if context:
            raise InputError(
                "the model's tokenizer has no chat template: multi-turn examples need one"
            )
        return FALLBACK_FORMAT.format(prompt=prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_response(response: str) -> str:
    return " " + response.strip()


def train_tokenizer(texts: Iterable[str], vocab_size: int, chat_tokens: bool = False):
    """Train a byte-level BPE and wrap it as a transformers fast tokenizer (left padding)."""
    roles = list(ROLE_TOKENS.values()) if chat_tokens else []
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD, BOS, *roles],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        padding_side="left",
        additional_special_tokens=roles or None,
    )
    tok.chat_template = chat_template(ROLE_TOKENS if chat_tokens else ROLE_WORDS)
    return tok


def load_tokenizer(path: str):
    tok = AutoTokenizer.from_pretrained(check_checkpoint_dir(path))
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # Checkpoints such as GPT-2 ship without PAD; PPO needs one distinct from EOS.
        tok.add_special_tokens({"pad_token": PAD})
    tok.padding_side = "left"
    return tok
