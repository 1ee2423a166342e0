"""A policy method added the way a team adds one: a settings section, a trainer, one entry in the
method table. It trains nothing: its one snapshot is the SFT model, and it ends as every method
does (the judge's choice of snapshot, registration as the policy)."""

from __future__ import annotations

import pandas as pd
from pydantic import Field

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.publish import publish, save_snapshot
from rlhf.core.settings import Method
from rlhf.models.config import Config
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.tokenizer import load_tokenizer


class Toy(Config):
    """The toy method: sampling of its snapshot."""

    max_new_tokens: int = Field(12, gt=0)
    """longest sampled response, in tokens"""
    temperature: float = Field(1.0, gt=0)
    """sampling temperature"""


TOY = Method(
    "toy",
    "the SFT model itself, as a method",
    "toy",
    Toy,
    online=False,
    trainer="tests.support.toy_method:run",
)


def run(ctx: StageContext, method: Method) -> dict:
    cfg = ctx.settings.method_config(Toy)
    device = start_run(ctx.settings.seed, ctx.settings.device)
    sft = ctx.input("sft", "model")
    tok = load_tokenizer(str(sft))
    lm = load_causal_lm(sft, tok)
    snapshots = ctx.checkpoints / "snapshots"
    save_snapshot(snapshots, 1, lm)
    history = pd.DataFrame({"score": [0.0], "kl": [0.0]}, index=pd.Index([1], name="iteration"))
    trained = {"seconds": 0.0, "generated_tokens": 0}
    return trained | publish(ctx, method, lm, tok, snapshots, history, cfg, device)
