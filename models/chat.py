"""Conversations as prompts hold them: plain text is one user turn; text written as a dialogue
(role markers at its start and after each blank line, "\n\nHuman: ...\n\nAssistant: ...",
as HH-RLHF writes it) holds several turns. Every dataset keeps its prompts in this form
(dialogue_text), and every stage reads them back into turns (conversation) before the
tokenizer's chat template renders them, so a marker is never written twice.

Pure Python: the feedback importer and ingest use it on every record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MARKERS = {"Human": "user", "User": "user", "Assistant": "assistant", "System": "system"}
WORDS = {"user": "Human", "assistant": "Assistant", "system": "System"}
TURN = re.compile(r"(?:^|\n\n)(Human|User|Assistant|System):[ \t]?")


def conversation(prompt: str) -> list[dict]:
    """The turns a prompt holds (role/content dicts). Text that starts with a role marker and
    has a user turn is split at its markers, a final empty Assistant cue dropped; any other
    text is one user turn."""
    text = prompt.lstrip("\n")
    if not TURN.match(text):
        return [{"role": "user", "content": prompt}]
    parts = TURN.split(text)  # ["", marker, content, marker, content, ...]
    turns = [
        {"role": MARKERS[parts[i]], "content": parts[i + 1].strip()}
        for i in range(1, len(parts), 2)
    ]
    if turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()  # the cue a response follows
    if not any(t["role"] == "user" for t in turns):
        return [{"role": "user", "content": prompt}]
    return turns


def dialogue_text(messages: Sequence[dict]) -> str:
    """Turns as the text a prompt keeps them in: one user turn is its content, a longer
    conversation is written with role markers, as conversation() reads it back."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "".join(f"\n\n{WORDS[m['role']]}: {m['content']}" for m in messages)


def canonical(prompt: str) -> str:
    """A prompt in the form every dataset keeps: its turns written back (a dialogue's cue and
    blank-line spacing made uniform; plain text as it is)."""
    return dialogue_text(conversation(prompt))
