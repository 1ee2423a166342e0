"""Stage 4, feedback: the validated comparisons as one canonical pair table.

Columns: pair_id, prompt, chosen, rejected, annotator, source, record, split. The split is
a hash of the normalised prompt, so the same prompt never lands in both train and test and
re-importing the same comparisons gives the same bytes.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from tasks.runner import StageContext
from tasks.validation import Suite, validate

CANONICAL = ["pair_id", "prompt", "chosen", "rejected", "annotator", "source", "record", "split"]
PAIR_SUITE = Suite("pairs", ("pair_id", "prompt", "chosen", "rejected", "annotator", "split"),
                   text=("prompt", "chosen", "rejected"), distinct=("chosen", "rejected"),
                   unique=("pair_id",))


def normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def split_of(prompt: str, test_fraction: float) -> str:
    h = int(hashlib.sha256(normalise_prompt(prompt).encode()).hexdigest()[:8], 16)
    return "test" if h / 0xFFFFFFFF < test_fraction else "train"


def pair_id(prompt: str, chosen: str, rejected: str, annotator: str) -> str:
    key = "\x00".join([prompt, chosen, rejected, annotator])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def to_canonical(df: pd.DataFrame, test_fraction: float) -> pd.DataFrame:
    """TRL-style prompt/chosen/rejected rows (annotator optional) as canonical pairs."""
    annotator = df["annotator"].fillna("unknown") if "annotator" in df else "unknown"
    out = pd.DataFrame({
        "prompt": df["prompt"], "chosen": df["chosen"], "rejected": df["rejected"],
        "annotator": annotator,
        "source": df["record"].str.rsplit(":", n=1).str[0],
        "record": df["record"],
    })
    out["pair_id"] = [pair_id(*r) for r in out[["prompt", "chosen", "rejected", "annotator"]].itertuples(index=False)]
    out["split"] = [split_of(p, test_fraction) for p in out["prompt"]]
    return out[CANONICAL]


def run(ctx: StageContext) -> dict:
    ctx.log_dataset("ingest", "feedback.parquet")
    raw = pd.read_parquet(ctx.input("ingest", "feedback.parquet"))
    pairs = to_canonical(raw, ctx.settings.feedback.test_fraction)
    outcome = validate(pairs.assign(_record=pairs["record"]), PAIR_SUITE,
                       str(ctx.input("ingest", "feedback.parquet")),
                       ctx.settings.ingest.max_quarantine_fraction)
    clean = outcome.clean.drop(columns=["_record"])
    clean.to_parquet(ctx.out / "pairs.parquet", index=False)
    if len(outcome.quarantined):
        outcome.quarantined.drop(columns=["_record"]).to_json(
            ctx.out / "quarantine.jsonl", orient="records", lines=True)
    per_annotator = clean["annotator"].value_counts()
    return {"pairs": len(clean), "quarantined": len(outcome.quarantined),
            "train_pairs": int((clean["split"] == "train").sum()),
            "test_pairs": int((clean["split"] == "test").sum()),
            "annotators": int(per_annotator.size),
            "train_test_prompt_overlap": len(set(clean.loc[clean.split == "train", "prompt"])
                                             & set(clean.loc[clean.split == "test", "prompt"]))}
