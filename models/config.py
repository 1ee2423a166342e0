"""Typed configs of the torch side: the architecture presets, the Trainer loop, PPO.

Strict (unknown keys and type coercion are errors) and frozen. The pipeline's settings
(rlhf.core.settings) build their params.yaml sections on these classes, so an algorithm
receives its own section, typed, and this package depends on nothing of the pipeline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Training(Config):
    """The Trainer loop shared by pretrain, SFT and the reward model (rlhf.models.train)."""

    steps: int = 500  # optimizer steps
    batch_size: int = 32  # rows per optimizer step, over all processes and accumulation steps
    gradient_accumulation_steps: int = 1
    lr: float = 0.001  # peak; linear warm-up, then cosine decay to 10% of it
    warmup_steps: int = 20
    weight_decay: float = 0.01
    log_every: int = 10  # steps between training-loss logs
    eval_every: int = 100  # steps between held-out evaluations (and one at the end)
    checkpoint_every: int = 100  # steps between resumable checkpoints
    max_minutes: float | None = None  # stop early (with a final evaluation) after this long


class Architecture(Config):
    """A Llama-style decoder (RMSNorm, rotary, SwiGLU); parameters ~ L(4h^2 + 3hi) + vocab h."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int = 512


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

    # ddp: every process holds the whole model and optimizer state, gradients are averaged;
    # fsdp: parameters, gradients and optimizer state are sharded over the processes (FSDP2,
    # one unit per decoder layer) and gathered a layer at a time, so a model that does not fit
    # one device trains on several. Online methods (ppo, grpo, rloo) only: the reference and
    # reward models are sharded too.
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # fsdp: the frozen reference and reward models' shards live in CPU memory and are copied
    # to the device a layer at a time (slower; frees their device memory for the policy)
    offload_frozen: bool = False


class Online(Config):
    """What every online method's loop shares (rlhf.core.policy.online): sampling, the KL to the
    reference, the guard, checkpoints and snapshots."""

    iterations: int = 100
    lr: float = 0.0003
    max_new_tokens: int = 24
    temperature: float = 1.0  # sampling temperature; every logprob pass divides logits by it
    kl_coef: float = 0.1  # beta of the KL to the reference (PPO: its initial value)
    # normalised score given to a response that never ends (null: it keeps its own score)
    no_eos_penalty: float | None = -1.0
    cliprange: float = 0.2
    max_grad_norm: float = 1.0
    checkpoint_every: int = 10  # iterations between resumable checkpoints
    snapshot_every: int = 10  # iterations between policy snapshots kept for evaluation
    samples_every: int = 10  # iterations between tables of sample responses logged to MLflow
    # Guard: a rollout with non-finite values or KL above max_kl (nats/response), or an update
    # with a non-finite gradient, is undone (the last good state restored) and retried;
    # max_unstable in a row stop the run.
    max_kl: float = 50.0
    max_unstable: int = 3


class PPO(Online):
    rollout_batch_size: int = 64  # prompts sampled per iteration
    minibatch_size: int = 32
    ppo_epochs: int = 4  # passes over each rollout
    kl_target: float | None = 2.0  # adaptive controller target (nats/sequence); null = fixed beta
    kl_horizon: int = 1000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    # Memory: `lora` trains a LoRA adapter on the SFT weights and uses the same weights with the
    # adapter off as the reference (no second copy); `copy` trains every weight against a
    # frozen copy. Gradient checkpointing recomputes activations in backward.
    reference: Literal["copy", "lora"] = "copy"
    lora_rank: int = 16
    lora_alpha: int = 32
    gradient_checkpointing: bool = False
    # torch.compile the update's forward/backward: faster per update after a one-off compile,
    # so it pays on long runs (docs/ppo.md has the measured trade-off)
    compile: bool = False


class Group(Online):
    """GRPO / RLOO (rlhf.models.grpo_step): k responses per prompt, a group baseline, no critic.
    Which baseline is the method's choice (policy.method), not a setting of its own."""

    prompts_per_iteration: int = 16  # each answered group_size times: the rollout's size
    group_size: int = Field(4, ge=2)  # k responses per prompt (a baseline needs two)
    minibatch_size: int = 32  # responses per update step
    epochs: int = 1  # passes over each rollout (1: the update is on-policy, the ratio is 1)
    # beta: a loss term for grpo (k3 estimator per token), a penalty on the score for rloo
    # (summed log-ratio of the response)
    kl_coef: float = 0.05


class DPO(Training):
    """DPO / IPO on preference pairs (rlhf.models.dpo), on the Trainer loop of the SFT stage."""

    loss: Literal["dpo", "ipo"] = "dpo"
    beta: float = 0.1  # how far from the reference the implicit reward lets the policy move
    max_length: int = 256  # tokens of prompt + response; longer prompts lose their start
    # sampling of the snapshots (one per evaluation) the judge chooses among, as the online
    # methods sample theirs
    max_new_tokens: int = 24
    temperature: float = 1.0
