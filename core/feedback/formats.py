"""Export formats -> votes. One function per format, each turning one input row into votes.

A vote is one judgement: for this prompt, this annotator preferred `chosen` to `rejected`.
A row that cannot be turned into votes raises Reject with a short, countable reason; it is
quarantined with that reason, never guessed at.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from rlhf.core.io import is_utf8
from rlhf.models.chat import WORDS, canonical, dialogue_text

UNKNOWN = "unknown"  # annotator, when the export does not say who judged
ASSISTANT = "\n\nAssistant:"


class Reject(Exception):
    """This row cannot become a vote; the message is the quarantine reason."""


class Vote(NamedTuple):  # a tuple: millions are made in an import, a dataclass is slower
    prompt: str
    chosen: str
    rejected: str
    annotator: str = UNKNOWN
    margin: float | None = None  # strength of the preference, in the export's own units
    tie: bool = False  # judged equal: chosen and rejected are just the first and second


# ----------------------------------------------------------------------------- field access
def text(row: dict, key: str) -> str:
    if key not in row or row[key] is None:
        raise Reject(f"{key}: missing")
    return utf8(row[key], key)


def utf8(value: object, key: str) -> str:
    """A string that UTF-8 (and so Arrow and Parquet) can hold: JSON escapes such as
    "\\ud800" decode to lone surrogates, which it cannot."""
    if not isinstance(value, str):
        raise Reject(f"{key}: not a string")
    if not is_utf8(value):
        raise Reject(f"{key}: not valid UTF-8")
    return value


DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)


def number(row: dict, key: str) -> float:
    """A finite number; CSV cells arrive as strings, so numeric strings are accepted, written
    in ASCII decimal only (float() would also read "٣", "1_000" and "nan")."""
    value = row.get(key)
    if value is None or value == "":
        raise Reject(f"{key}: missing")
    if isinstance(value, bool) or (isinstance(value, str) and not DECIMAL.fullmatch(value)):
        raise Reject(f"{key}: not a number")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise Reject(f"{key}: not a number") from None
    if not math.isfinite(x):
        raise Reject(f"{key}: not a number")
    return x


def annotator_of(row: dict, *keys: str) -> str:
    for key in keys:
        value = row.get(key)
        if value is not None and value != "":
            return name_of(value, key)
    return UNKNOWN


def name_of(value: object, key: str) -> str:
    """An annotator's name or numeric id as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # an integer longer than Python prints
            raise Reject(f"{key}: not a name or id") from None
    raise Reject(f"{key}: not a name or id")


def optional_number(row: dict, key: str) -> float | None:
    try:
        return number(row, key)
    except Reject:
        return None


# ------------------------------------------------------------------------------- messages
def messages(value: object, key: str) -> list[dict]:
    if not (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and m["role"] in WORDS
            and isinstance(m.get("content"), str)
            for m in value
        )
    ):
        raise Reject(f"{key}: not a list of role/content messages")
    for m in value:
        utf8(m["content"], key)
    return value


def completion(turns: list[dict], key: str) -> str:
    if any(m["role"] != "assistant" for m in turns):
        raise Reject(f"{key}: completion has a non-assistant message")
    return "\n\n".join(m["content"] for m in turns)


# -------------------------------------------------------------------------------- formats
def hh(row: dict) -> list[Vote]:
    """Anthropic HH-RLHF: two whole dialogues; the prompt is their shared prefix up to and
    including the last Assistant marker."""
    chosen, rejected = text(row, "chosen"), text(row, "rejected")
    cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise Reject("hh: dialogue without an Assistant turn")
    prompt = chosen[: cut_c + len(ASSISTANT)]
    if prompt != rejected[: cut_r + len(ASSISTANT)]:
        raise Reject("hh: chosen and rejected prompts differ")
    response_c, response_r = chosen[cut_c + len(ASSISTANT) :], rejected[cut_r + len(ASSISTANT) :]
    if not response_c.strip():
        raise Reject("hh: empty final response (chosen)")
    if not response_r.strip():
        raise Reject("hh: empty final response (rejected)")
    return [Vote(prompt, response_c.strip(), response_r.strip(), annotator_of(row, "annotator"))]


def shared_text_prefix(a: str, b: str) -> int:
    """Length of the common prefix of a and b, backed off to a word boundary."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n < min(len(a), len(b)):
        while n > 0 and not a[n - 1].isspace():
            n -= 1
    return n


def trl(row: dict) -> list[Vote]:
    """TRL preference rows: prompt/chosen/rejected as strings or role/content message lists,
    or the implicit-prompt variant where chosen and rejected carry the prompt themselves."""
    ann, margin = annotator_of(row, "annotator"), optional_number(row, "margin")
    if "chosen" not in row or row["chosen"] is None:
        raise Reject("chosen: missing")
    if "rejected" not in row or row["rejected"] is None:
        raise Reject("rejected: missing")
    conversational = isinstance(row["chosen"], list)
    if row.get("prompt") is not None:
        if not conversational:
            return [
                Vote(text(row, "prompt"), text(row, "chosen"), text(row, "rejected"), ann, margin)
            ]
        prompt = dialogue_text(messages(row["prompt"], "prompt"))
        return [
            Vote(
                prompt,
                completion(messages(row["chosen"], "chosen"), "chosen"),
                completion(messages(row["rejected"], "rejected"), "rejected"),
                ann,
                margin,
            )
        ]
    if conversational:
        c, r = messages(row["chosen"], "chosen"), messages(row["rejected"], "rejected")
        n = 0
        while n < min(len(c), len(r)) and c[n] == r[n]:
            n += 1
        if n == 0:
            raise Reject("trl: chosen and rejected share no prompt")
        return [
            Vote(
                dialogue_text(c[:n]),
                completion(c[n:], "chosen"),
                completion(r[n:], "rejected"),
                ann,
                margin,
            )
        ]
    chosen, rejected = text(row, "chosen"), text(row, "rejected")
    n = shared_text_prefix(chosen, rejected)
    if not chosen[:n].strip():
        raise Reject("trl: chosen and rejected share no prompt")
    return [Vote(chosen[:n].rstrip(), chosen[n:].strip(), rejected[n:].strip(), ann, margin)]


def summarize(row: dict) -> list[Vote]:
    """OpenAI summarize-from-feedback comparisons: a post (or article), two summaries and the
    index of the preferred one; the prompt is written the way TL;DR policies were prompted."""
    info = row.get("info")
    if not isinstance(info, dict):
        raise Reject("info: missing")
    summaries = row.get("summaries")
    if not (
        isinstance(summaries, list)
        and len(summaries) == 2
        and all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in summaries)
    ):
        raise Reject("summaries: need exactly two with text")
    choice = row.get("choice")
    if type(choice) is not int or choice not in (0, 1):
        raise Reject("choice: must be 0 or 1")
    if isinstance(info.get("post"), str):
        prompt = (
            f"SUBREDDIT: r/{info.get('subreddit') or ''}\nTITLE: {info.get('title') or ''}\n"
            f"POST: {info['post']}\nTL;DR:"
        )
    elif isinstance(info.get("article"), str):
        prompt = f"ARTICLE: {info['article']}\nTL;DR:"
    else:
        raise Reject("info: no post or article")
    extra = row["extra"] if isinstance(row.get("extra"), dict) else {}
    chosen, rejected = summaries[choice]["text"], summaries[1 - choice]["text"]
    return [
        Vote(
            prompt,
            chosen.strip(),
            rejected.strip(),
            annotator_of(row, "worker"),
            optional_number(extra, "confidence"),
        )
    ]


def shp(row: dict) -> list[Vote]:
    """Stanford SHP: a Reddit post and two comments; labels = 1 when A was preferred."""
    prompt, a, b = text(row, "history"), text(row, "human_ref_A"), text(row, "human_ref_B")
    label = number(row, "labels")
    if label not in (0.0, 1.0):
        raise Reject("labels: must be 0 or 1")
    chosen, rejected = (a, b) if label == 1.0 else (b, a)
    sa, sb = optional_number(row, "score_A"), optional_number(row, "score_B")
    margin = None if sa is None or sb is None else abs(sa - sb)
    return [Vote(prompt, chosen, rejected, annotator_of(row, "annotator"), margin)]


def alpacafarm(row: dict) -> list[Vote]:
    """AlpacaFarm / AlpacaEval pairwise preferences: preference 1 or 2 names the better output;
    0, 1.5 or "tie" says neither was (a tie vote)."""
    instruction, extra = text(row, "instruction"), row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise Reject("input: not a string")
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    o1, o2 = text(row, "output_1"), text(row, "output_2")
    annotator = annotator_of(row, "annotator", "annotator_index")
    if isinstance(row.get("preference"), str) and row["preference"].strip().lower() == "tie":
        return [Vote(prompt, o1, o2, annotator, tie=True)]
    preference = number(row, "preference")
    if preference in TIES:
        return [Vote(prompt, o1, o2, annotator, tie=True)]
    if preference not in (1.0, 2.0):
        raise Reject("preference: must be 1 or 2 (or 0, 1.5 or tie for a tie)")
    chosen, rejected = (o1, o2) if preference == 1.0 else (o2, o1)
    return [Vote(prompt, chosen, rejected, annotator)]


TIES = (0.0, 1.5)  # AlpacaFarm's and AlpacaEval's draws


LS_PROMPT = ("prompt", "question", "instruction", "text")
LS_ANSWERS = (("answer1", "answer2"), ("text1", "text2"), ("response1", "response2"))


def labelstudio(row: dict) -> list[Vote]:
    """A Label Studio task of a pairwise project (Pairwise tag, left = first answer): one
    vote per completed annotation; cancelled annotations give none."""
    data = row.get("data")
    if not isinstance(data, dict):
        raise Reject("labelstudio: task without data")
    prompt_key = next((k for k in LS_PROMPT if isinstance(data.get(k), str)), None)
    keys = next((ks for ks in LS_ANSWERS if all(isinstance(data.get(k), str) for k in ks)), None)
    if prompt_key is None or keys is None:
        raise Reject("labelstudio: data lacks a prompt and two answers")
    prompt, left, right = data[prompt_key], data[keys[0]], data[keys[1]]
    annotations = row.get("annotations", row.get("completions")) or []
    votes = []
    for ann in annotations if isinstance(annotations, list) else []:
        if not isinstance(ann, dict) or ann.get("was_cancelled"):
            continue
        results = ann.get("result")
        picked = [
            r["value"].get("selected")
            for r in (results if isinstance(results, list) else [])
            if isinstance(r, dict)
            and r.get("type") == "pairwise"
            and isinstance(r.get("value"), dict)
        ]
        if picked and isinstance(picked[0], str) and picked[0] in ("left", "right"):
            who = ann.get("completed_by")
            who = who.get("email") or who.get("id") if isinstance(who, dict) else who
            chosen, rejected = (left, right) if picked[0] == "left" else (right, left)
            name = UNKNOWN if who is None or who == "" else name_of(who, "completed_by")
            votes.append(Vote(prompt, chosen, rejected, name))
    if not votes:
        raise Reject("labelstudio: no completed pairwise annotation")
    return votes


# ---------------------------------------------------------------------------- ratings
@dataclass(frozen=True)
class Rating:
    prompt: str
    response: str
    annotator: str
    value: float


def rating(row: dict) -> Rating:
    return Rating(
        canonical(text(row, "prompt")),
        text(row, "response"),
        annotator_of(row, "annotator"),
        number(row, "rating"),
    )


MEAN_RATING = "mean-rating"  # the annotator of pairs built from aggregated ratings


def rating_pairs(ratings: list[Rating]) -> tuple[list[Vote], dict[str, int]]:
    """Mean rating per (prompt, response); every two responses of a prompt with different
    means give a pair (margin = the difference). Returns the votes and what gave none:
    tied response pairs, and responses that were the only one for their prompt."""
    by_prompt: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ratings:
        by_prompt[r.prompt][r.response].append(r.value)
    votes, unpaired = [], {"tied_pairs": 0, "single_responses": 0}
    for prompt, responses in by_prompt.items():
        means = sorted(
            ((sum(v) / len(v), resp) for resp, v in responses.items()), key=lambda x: -x[0]
        )
        if len(means) == 1:
            unpaired["single_responses"] += 1
        for i, (mi, ri) in enumerate(means):
            for mj, rj in means[i + 1 :]:
                if mi == mj:
                    unpaired["tied_pairs"] += 1
                else:
                    votes.append(Vote(prompt, ri, rj, MEAN_RATING, mi - mj))
    return votes, unpaired


# --------------------------------------------------------------------------- detection
PAIRWISE: dict[str, Callable[[dict], list[Vote]]] = {
    "hh": hh,
    "trl": trl,
    "summarize": summarize,
    "shp": shp,
    "alpacafarm": alpacafarm,
    "labelstudio": labelstudio,
}
NAMES = ("hh", "trl", "summarize", "shp", "alpacafarm", "ratings", "labelstudio")


def votes_of(fmt: str, row: dict) -> list[Vote]:
    """The row's votes in a pairwise format, every text checked to be valid UTF-8, each prompt
    in the form every dataset keeps (rlhf.models.chat.canonical: HH's "\n\nHuman: x\n\nAssistant:"
    is "x")."""
    votes = PAIRWISE[fmt](row)
    for v in votes:
        for key in ("prompt", "chosen", "rejected", "annotator"):
            utf8(getattr(v, key), key)
    return [v._replace(prompt=canonical(v.prompt)) for v in votes]


def detect(row: dict) -> str | None:
    """The format a row looks like, from its keys (and, for HH vs TRL, its text)."""
    keys = set(row)
    if {"summaries", "choice"} <= keys:
        return "summarize"
    if {"human_ref_A", "human_ref_B"} <= keys:
        return "shp"
    if {"output_1", "output_2", "preference"} <= keys:
        return "alpacafarm"
    if "data" in keys and keys & {"annotations", "completions"}:
        return "labelstudio"
    if {"response", "rating"} <= keys:
        return "ratings"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and isinstance(row["chosen"], str) and ASSISTANT in row["chosen"]:
            return "hh"
        return "trl"
    return None
