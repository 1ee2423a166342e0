"""SFT records and policy prompts in the formats users bring: examples (prompt, response and
the turns before them) and prompts (a conversation to answer) in one form.

  prompt/response   {"prompt": ..., "response": ...}
  Alpaca            {"instruction": ..., "input": ... (absent or empty), "output": ...}
  chat              {"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}

A conversation gives one example per assistant turn that answers a user turn: the turns
before that user turn are its context (JSON), rendered by the tokenizer's chat template. A
prompt written as a dialogue (HH's "\n\nHuman: ...\n\nAssistant: ...") is read into its turns
the same way (rlhf.models.chat), so its earlier turns become context too. A record that fits
none of these raises Unusable with the field at fault; ingest quarantines it.
"""

from __future__ import annotations

import json

from rlhf.models import chat

ROLES = ("system", "user", "assistant")
NO_CONTEXT = "[]"


class Unusable(ValueError):
    """The record cannot give an example; the message names the field."""


def examples(row: dict) -> list[dict]:
    """prompt, response and context of each example in one record."""
    if "messages" in row:
        return conversation(row["messages"])
    if "instruction" in row or "output" in row:
        return [alpaca(row)]
    prompt = row.get("prompt")
    if not isinstance(prompt, str):  # missing or empty fields are the validation suite's
        return [{"prompt": prompt, "response": row.get("response"), "context": NO_CONTEXT}]
    return [example(prompt, row.get("response"))]


def example(prompt: str, response) -> dict:
    """A prompt (plain, or a dialogue whose last turn is the user's) and its response."""
    *earlier, last = chat.conversation(prompt)
    if last["role"] != "user":
        raise Unusable("prompt: its dialogue ends with an assistant turn, not the user's")
    return {"prompt": last["content"], "response": response, "context": context_json(earlier)}


def context_json(turns: list[dict]) -> str:
    return json.dumps(turns, ensure_ascii=False) if turns else NO_CONTEXT


def alpaca(row: dict) -> dict:
    for field in ("instruction", "output"):
        if not isinstance(row.get(field), str):
            raise Unusable(f"{field}: missing")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise Unusable("input: not text")
    prompt = row["instruction"].strip()
    if extra and extra.strip():
        prompt += "\n\n" + extra.strip()
    return example(prompt, row["output"])


def turns(messages) -> list[dict]:
    if isinstance(messages, str):  # CSV cells hold JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise Unusable("messages: not valid JSON") from None
    if not isinstance(messages, list) or not messages:
        raise Unusable("messages: expected a non-empty list of {role, content}")
    out = []
    for n, m in enumerate(messages, start=1):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise Unusable(f"messages[{n}].role: expected one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise Unusable(f"messages[{n}].content: missing")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def conversation(messages) -> list[dict]:
    msgs = turns(messages)
    found = [
        {
            "prompt": msgs[i - 1]["content"],
            "response": m["content"],
            "context": context_json(msgs[: i - 1]),
        }
        for i, m in enumerate(msgs)
        if m["role"] == "assistant" and i and msgs[i - 1]["role"] == "user"
    ]
    if not found:
        raise Unusable("messages: no assistant turn answering a user turn")
    return found


def prompt_record(row: dict) -> dict:
    """A policy prompt record with its prompt in the form every dataset keeps
    (rlhf.models.chat.canonical): a `prompt` text (plain or a dialogue), or chat `messages`
    ending with the user's turn. Its other fields are kept."""
    if "messages" in row:
        msgs = turns(row["messages"])
        if msgs[-1]["role"] != "user":
            raise Unusable("messages: the last turn is not the user's")
        rest = {k: v for k, v in row.items() if k != "messages"}
        return {**rest, "prompt": chat.dialogue_text(msgs)}
    if isinstance(row.get("prompt"), str):
        return {**row, "prompt": chat.canonical(row["prompt"])}
    return row  # a missing or wrong prompt is the validation suite's to report
