"""SFT records in the formats users bring, as prompt/response examples with their context.

  prompt/response   {"prompt": ..., "response": ...}
  Alpaca            {"instruction": ..., "input": ... (absent or empty), "output": ...}
  chat              {"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}

A conversation gives one example per assistant turn that answers a user turn: the turns
before that user turn are its context (JSON), rendered by the tokenizer's chat template. A
record that fits none of these raises Unusable with the field at fault; ingest quarantines it.
"""

from __future__ import annotations

import json

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
    # prompt/response: missing or empty fields are the validation suite's to report
    return [{"prompt": row.get("prompt"), "response": row.get("response"), "context": NO_CONTEXT}]


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
    return {"prompt": prompt, "response": row["output"], "context": NO_CONTEXT}


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
            "context": json.dumps(msgs[: i - 1], ensure_ascii=False),
        }
        for i, m in enumerate(msgs)
        if m["role"] == "assistant" and i and msgs[i - 1]["role"] == "user"
    ]
    if not found:
        raise Unusable("messages: no assistant turn answering a user turn")
    return found
