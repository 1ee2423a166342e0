"""Typed configs of the torch side: the architecture presets, the Trainer loop, the policy methods.

Strict (unknown keys, type coercion, NaN and infinity are errors) and frozen. Each field carries
its default, its bounds and, in the docstring under it, its meaning: the one place a setting is
described. The pipeline's settings (rlhf.core.settings) build their params.yaml sections on these
classes, so an algorithm receives its own section, typed, and this package depends on nothing of
the pipeline.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# More optimizer steps than any run trains (large pretraining runs take about 10^6): a count
# beyond it is a typo, refused before anything runs rather than trained without bound.
MAX_STEPS = 10_000_000


class Config(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )


def default(section: type[BaseModel], name: str, value: Any) -> Any:
    """`section`'s field `name` (its bounds and meaning) with another default: a subclass
    changes a default without restating what the field is."""
    field = copy.copy(section.model_fields[name])
    field.default = value
    return field


class Training(Config):
    """The Trainer loop shared by the supervised stages (rlhf.models.train)."""

    steps: int = Field(500, gt=0, le=MAX_STEPS)
    """optimizer steps (unless epochs is set)"""
    epochs: float | None = Field(None, gt=0)
    """passes over the training rows instead of a number of steps: the steps are epochs x
    rows / batch_size, rounded up, so the schedule follows the data's size (null: steps)"""
    early_stopping: int | None = Field(None, ge=1)
    """stop after this many held-out evaluations in a row without a better held-out figure,
    and keep the weights of the best evaluation (null: train every step, keep the last)"""
    batch_size: int = Field(32, gt=0)
    """rows per optimizer step, over all processes and accumulation steps"""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """micro-batches per optimizer step (batch_size must be a multiple of it x processes)"""
    lr: float = Field(0.001, gt=0, le=1)
    """peak learning rate: linear warm-up, then cosine decay to 10% of it"""
    warmup_steps: int = Field(20, ge=0)
    """steps of linear warm-up"""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW's decoupled weight decay"""
    log_every: int = Field(10, gt=0)
    """steps between training-loss logs"""
    eval_every: int = Field(100, gt=0)
    """steps between held-out evaluations (and one at the end)"""
    checkpoint_every: int = Field(100, gt=0)
    """steps between resumable checkpoints"""
    max_minutes: float | None = Field(None, gt=0)
    """a time budget: stop early, with a final evaluation, after this long (null: none)"""


class Lora(Config):
    """LoRA adapters (peft), for every stage that trains one: the rank and scale of the
    low-rank update and where it goes."""

    rank: int = Field(16, gt=0)
    """the adapter's rank"""
    alpha: int = Field(32, gt=0)
    """the adapter's scale (the update is scaled by alpha / rank)"""
    dropout: float = Field(0.0, ge=0, lt=1)
    """dropout on the adapter's input"""
    target_modules: str | list[str] = "all-linear"
    """the layers that get an adapter: all-linear, or module names"""


class Adapter(Config):
    """A stage that may train a LoRA adapter instead of every weight."""

    lora: bool = False
    """train a LoRA adapter (section lora) on the frozen weights instead of every weight: the
    saved model is the merged weights, a plain checkpoint, with the adapter in model/adapter"""


class Architecture(Config):
    """A Llama-style decoder (RMSNorm, rotary, SwiGLU); parameters ~ L(4h^2 + 3hi) + vocab h."""

    hidden_size: int = Field(gt=0)
    """width of the residual stream"""
    num_layers: int = Field(gt=0)
    """decoder layers"""
    num_heads: int = Field(gt=0)
    """attention heads (hidden_size must be a multiple of it)"""
    intermediate_size: int = Field(gt=0)
    """width of the SwiGLU feed-forward layer"""
    max_positions: int = Field(512, gt=0)
    """the longest sequence the model reads, in tokens"""

    @model_validator(mode="after")
    def _heads_fit(self):
        head, rest = divmod(self.hidden_size, self.num_heads)
        if rest or head % 2:  # rotary embeddings turn the dimensions of a head in pairs
            raise ValueError(
                f"hidden_size {self.hidden_size} must be num_heads ({self.num_heads}) times an "
                "even head size"
            )
        return self


# The built-in model sizes (params.yaml's pretrain.presets may add its own or redefine these);
# parameters counted with the vocabulary each is meant for (a test checks them).
PRESETS = {
    # ~0.9M with 512 tokens: the demo, on CPU
    "tiny": Architecture(
        hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384, max_positions=256
    ),
    # ~11M with 2048 tokens: a real corpus on CPU
    "small": Architecture(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1024),
    # ~100M with 16k tokens: for a GPU
    "base": Architecture(
        hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048, max_positions=1024
    ),
}


class Parallel(Config):
    """How several processes (torchrun / accelerate launch) share one model; one process
    ignores it."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """ddp: every process holds the whole model and optimizer state, gradients are averaged;
    fsdp: parameters, gradients and optimizer state sharded over the processes (FSDP2, one unit
    per decoder layer), so a model that does not fit one device trains on several. The online
    methods only (ppo, grpo, rloo): their reference and reward models are sharded too"""
    offload_frozen: bool = False
    """fsdp: the frozen reference and reward models' shards live in CPU memory and are copied to
    the device a layer at a time (slower; frees their device memory for the policy)"""


class Online(Config):
    """What every online method's loop shares (rlhf.core.policy.online): sampling, the KL to the
    reference, the guard, checkpoints and snapshots."""

    iterations: int = Field(100, gt=0, le=MAX_STEPS)
    """rollout-and-update iterations"""
    max_minutes: float | None = Field(None, gt=0)
    """a time budget: stop after the iteration that passes it; the snapshots so far are judged
    (null: none)"""
    lr: float = Field(0.0003, gt=0, le=1)
    """AdamW's learning rate (constant)"""
    max_new_tokens: int = Field(24, gt=0)
    """longest sampled response, in tokens"""
    temperature: float = Field(1.0, gt=0)
    """sampling temperature; every log-probability pass divides the logits by it"""
    kl_coef: float = Field(0.1, ge=0)
    """beta, the weight of the KL to the reference (PPO: its initial value)"""
    no_eos_penalty: float | None = -1.0
    """normalised score given to a response that never ends (null: it keeps its own score)"""
    cliprange: float = Field(0.2, gt=0)
    """the policy ratio's clip range"""
    max_grad_norm: float = Field(1.0, gt=0)
    """gradients are clipped to this norm"""
    checkpoint_every: int = Field(10, gt=0)
    """iterations between resumable checkpoints"""
    snapshot_every: int = Field(10, gt=0)
    """iterations between policy snapshots kept for the judge's choice and the evaluation"""
    samples_every: int = Field(10, gt=0)
    """iterations between tables of sample responses logged to MLflow"""
    max_kl: float = Field(50.0, gt=0)
    """guard: a rollout above this KL (nats per response) or with non-finite values, or an
    update with a non-finite gradient, is undone (the last good state restored) and retried"""
    max_unstable: int = Field(3, ge=1)
    """guard: this many undone iterations in a row stop the run"""
    reference: Literal["copy", "lora"] = "copy"
    """copy: every weight trains against a frozen copy of the SFT model; lora: a LoRA adapter
    (section lora) trains and the reference is the same weights with the adapter off (no
    second copy in memory)"""


class PPO(Online):
    """PPO with a value head and an adaptive KL penalty (rlhf.models.ppo_step)."""

    rollout_batch_size: int = Field(64, gt=0)
    """prompts sampled per iteration (a multiple of minibatch_size)"""
    minibatch_size: int = Field(32, gt=0)
    """responses per update step"""
    ppo_epochs: int = Field(4, gt=0)
    """passes over each rollout"""
    kl_target: float | None = Field(2.0, gt=0)
    """the adaptive KL controller's target, nats per response (null: kl_coef stays fixed)"""
    kl_horizon: int = Field(1000, gt=0)
    """the adaptive controller's horizon, in responses"""
    gamma: float = Field(1.0, ge=0, le=1)
    """GAE's discount"""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE's lambda"""
    cliprange_value: float = Field(0.2, gt=0)
    """the value function's clip range"""
    vf_coef: float = Field(0.1, ge=0)
    """weight of the value loss"""
    gradient_checkpointing: bool = False
    """recompute activations in backward instead of keeping them (less memory, slower)"""
    compile: bool = False
    """torch.compile the update's forward and backward: faster per update after a one-off
    compile, so it pays on long runs"""


class Group(Online):
    """GRPO / RLOO (rlhf.models.grpo_step): k responses per prompt, a group baseline, no critic.
    Which baseline is the method's choice (policy.method), not a setting of its own."""

    kl_coef: float = default(Online, "kl_coef", 0.05)
    prompts_per_iteration: int = Field(16, gt=0)
    """prompts per iteration, each answered group_size times: the rollout's size"""
    group_size: int = Field(4, ge=2)
    """k responses per prompt (a baseline needs two)"""
    minibatch_size: int = Field(32, gt=0)
    """responses per update step"""
    epochs: int = Field(1, gt=0)
    """passes over each rollout (1: the update is on-policy, the ratio is 1)"""


class DPO(Training, Adapter):
    """DPO / IPO on preference pairs (rlhf.models.dpo), on the Trainer loop of the SFT stage. With
    lora, the reference is the weights before the adapter: no copy is kept."""

    steps: int = default(Training, "steps", 300)
    lr: float = default(Training, "lr", 0.0001)
    weight_decay: float = default(Training, "weight_decay", 0.0)
    eval_every: int = default(Training, "eval_every", 30)
    checkpoint_every: int = default(Training, "checkpoint_every", 30)
    loss: Literal["dpo", "ipo"] = "dpo"
    """dpo: the logistic loss; ipo: the squared loss of IPO"""
    beta: float = Field(0.1, gt=0)
    """the implicit reward's scale: larger keeps the policy nearer the reference"""
    max_length: int | None = Field(None, gt=0)
    """tokens of prompt + response (null: context_length); a longer prompt loses its start,
    a pair whose response cannot fit is dropped"""
    max_new_tokens: int = Field(24, gt=0)
    """sampling of the snapshots (one per evaluation) the judge chooses among"""
    temperature: float = Field(1.0, gt=0)
    """sampling temperature of those snapshots"""
