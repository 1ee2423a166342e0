"""Byte-level BPE tokenizer trained on the corpus, and the chat format shared by all stages.

A prompt is a conversation: plain text is one user turn, and text written as a dialogue
("\n\nHuman: ...\n\nAssistant: ...\n\nHuman: ...", as HH-RLHF writes it and as multi-turn
prompts are kept) is split into its turns (conversation()). The format lives in the tokenizer
as its chat template, so a model saved here carries it and `tokenizer.apply_chat_template`
renders the same text as the pipeline:

    <|startoftext|>Human: {prompt}\nAssistant: {response}<|endoftext|>

(with `chat_tokens`, <|user|> and <|assistant|> replace "Human:" and "Assistant:"). Every
stage renders a prompt with format_prompt and appends " {response}" + EOS, so SFT, the
reward model, the policy and evaluation score and generate the same tokens, and a marker is
never written twice. A checkpoint whose tokenizer has no chat template gets this one, with its
own BOS and EOS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rlhf.models.chat import conversation
from rlhf.models.errors import InputError
from rlhf.models.lm import check_checkpoint_dir

BOS = "<|startoftext|>"  # starts every document and every conversation
EOS = "<|endoftext|>"  # ends them; packing puts it between documents
PAD = "<pad>"  # distinct from EOS: PPO masks after EOS and must tell the two apart
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
ROLE_WORDS = {"system": "System:", "user": "Human:", "assistant": "Assistant:"}


def chat_template(roles: dict[str, str]) -> str:
    """Jinja: each turn as '<role> <content>\\n'; an assistant turn ends in EOS instead."""
    role = "{% set role = " + repr(roles) + " %}"
    return (
        role + "{% if bos_token %}{{ bos_token }}{% endif %}{% for m in messages %}"
        "{% if m['role'] not in role %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"  # noqa: E501
        "{{ role[m['role']] }} {{ m['content'] | trim }}"
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% if not loop.last %}{{ '\\n' }}{% endif %}"  # noqa: E501
        "{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ role['assistant'] }}{% endif %}"
    )


def format_prompt(tokenizer, prompt: str, context: Sequence[dict] = ()) -> str:
    """The text a response follows: earlier turns (role/content dicts), the prompt's turns,
    the assistant's cue, in the tokenizer's chat template."""
    messages = [*context, *conversation(prompt)]
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
    """A checkpoint's tokenizer, ready for every stage: PAD distinct from EOS, left padding,
    and a chat template (the project's, with the tokenizer's own BOS and EOS, when it has
    none)."""
    tok = AutoTokenizer.from_pretrained(check_checkpoint_dir(path))
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # Checkpoints such as GPT-2 ship without PAD; PPO needs one distinct from EOS.
        tok.add_special_tokens({"pad_token": PAD})
    if tok.eos_token is None:
        raise InputError(f"{path}: the tokenizer has no EOS token: responses could not end")
    if tok.chat_template is None:
        tok.chat_template = chat_template(ROLE_WORDS)
    tok.padding_side = "left"
    return tok
