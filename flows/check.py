"""`rlhf check`: the settings and the data, stage by stage, before anything trains.

  ingest     each dataset's records read and quarantined, with the reasons (ingest's own code)
  feedback   the pair table's splits and ties
  lengths    each stage's rows in tokens, with the tokenizer the run will use (the checkpoint's,
             or one trained on the corpus as pretrain will): what each stage drops or cuts
  leakage    evaluation prompts and the feedback's test and judge prompts found in the SFT
             data, the policy's prompts or the corpus: an error unless allowed
  estimate   seconds per step of each training stage timed on this machine, times its steps
             (or its max_minutes), and the process's peak memory while timing
`rlhf run` runs the same checks first. Errors make the exit status non-zero.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from rlhf.core.data.validation import GateError, new_context
from rlhf.core.feedback.dataset import normalise_prompt
from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.io import FileFault
from rlhf.core.settings import Settings
from rlhf.models.batching import examples_rows, reward_pairs
from rlhf.models.config import PPO, Config, Group, Online, Training
from rlhf.models.generation import prompts_cut, sample
from rlhf.models.lm import build_causal_lm, load_causal_lm, max_positions
from rlhf.models.tokenizer import load_tokenizer, train_tokenizer
from rlhf.models.train import planned_steps
from rlhf.tasks.ingest import datasets, ingest_dataset, readable_places

LEAK_MIN_CHARS = 30  # shorter prompts leak only by exact match: "hi" is in every corpus


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def say(self, stage: str, text: str) -> None:
        self.lines.append(f"{stage}: {text}")

    def error(self, stage: str, text: str) -> None:
        self.errors.append(f"{stage}: error: {text}")


@dataclass
class Data:
    """The ingested tables (with each record's file:line) and the feedback's pairs."""

    tables: dict[str, pd.DataFrame]
    pairs: pd.DataFrame | None


def check(settings: Settings, allow_leakage: bool = False, estimate: bool = True) -> Report:
    report = Report()
    settings.require_data()
    data = read_data(settings, report)
    if report.errors:
        return report
    tok, positions = tokenizer_for(settings, data)
    lengths(settings, data, tok, positions, report)
    leakage(settings, data, report, allow_leakage or settings.allow_leakage)
    if estimate:
        timings(settings, data, tok, report)
    return report


def read_data(settings: Settings, report: Report) -> Data:
    cfg, folder = settings.ingest, settings.data_dir
    tables, gx = {}, new_context()
    for name, dataset in datasets(cfg).items():
        try:
            outcome = ingest_dataset(
                dataset,
                folder / dataset.folder,
                cfg.max_quarantine_fraction,
                gx,
                readable_places(settings),
            )
        except (GateError, FileFault) as e:
            report.error("ingest", str(e))
            continue
        bad = outcome.quarantined
        reasons = bad["reason"].value_counts().head(3) if len(bad) else pd.Series(dtype=int)
        why = ", ".join(f"{n} {r}" for r, n in reasons.items())
        report.say(
            "ingest",
            f"{name}: {len(outcome.clean) + len(bad)} records, {len(bad)} quarantined"
            + (f" ({why})" if why else ""),
        )
        tables[name] = outcome.clean
    if not settings.rewards.uses_reward_model:
        report.say("feedback", "none needed: rewards.model_weight 0 (the reward functions alone)")
        return Data(tables, None)
    pairs_path = settings.feedback_dir / "pairs.parquet"
    if not pairs_path.is_file():
        report.error("feedback", f"{pairs_path}: none (import some: rlhf feedback import FILE)")
        return Data(tables, None)
    pairs = read_pairs(pairs_path, ties=True)
    splits = pairs[~pairs["tie"]]["split"].value_counts()
    report.say(
        "feedback",
        f"{len(pairs)} votes: train {splits.get('train', 0)}, test {splits.get('test', 0)}, "
        f"judge {splits.get('judge', 0)}, ties {int(pairs['tie'].sum())} (left out)",
    )
    for split, stage in (("train", "reward"), ("test", "reward"), ("judge", "judge")):
        if not splits.get(split, 0):
            report.error(stage, f"no {split} pairs in {pairs_path} (feedback.*_fraction)")
    return Data(tables, pairs[~pairs["tie"]])


def tokenizer_for(settings: Settings, data: Data):
    """The tokenizer the run will use and the model's positions."""
    checkpoint = settings.pretrain.init_checkpoint
    if checkpoint:
        path = settings.path(checkpoint)
        return load_tokenizer(str(path)), max_positions(str(path))
    cfg = settings.pretrain
    docs = data.tables["corpus"]["text"].tolist()
    return train_tokenizer(docs, cfg.vocab_size, cfg.chat_tokens), cfg.architecture.max_positions


def lengths(settings: Settings, data: Data, tok, positions: int, report: Report) -> None:
    """What each stage keeps, drops and cuts, in the tokens of its budget."""
    sft = settings.token_budget(settings.sft.max_length, positions)
    fit = examples_rows(tok, data.tables["sft"], sft)
    report.say(
        "sft",
        f"{len(fit.rows)} of {len(data.tables['sft'])} examples fit {sft} tokens "
        f"({fit.dropped} dropped, {fit.truncated} with the prompt cut)",
    )
    if data.pairs is not None:
        pair_lengths(settings, data.pairs, tok, positions, report)
    method = settings.section(settings.method.section, Config)
    new_tokens = getattr(method, "max_new_tokens", settings.evaluate.max_new_tokens)
    for stage, table, asked in (
        ("policy", "prompts_train", new_tokens),
        ("evaluate", "prompts_eval", settings.evaluate.max_new_tokens),
    ):
        prompts = data.tables[table]["prompt"].tolist()
        cut = prompts_cut(tok, prompts, positions - asked)
        report.say(stage, f"{len(prompts)} prompts, {cut} cut to leave {asked} new tokens")


def pair_lengths(
    settings: Settings, pairs: pd.DataFrame, tok, positions: int, report: Report
) -> None:
    """How many of the reward and judge stages' pairs fit their token budgets."""
    for stage, cfg, split in (
        ("reward", settings.reward, "train"),
        ("judge", settings.judge, "judge"),
    ):
        budget = settings.token_budget(cfg.max_length, positions)
        rows = pairs[pairs["split"] == split]
        fitted = reward_pairs(
            tok,
            rows["prompt"].tolist(),
            rows["chosen"].tolist(),
            rows["rejected"].tolist(),
            [0.0] * len(rows),
            budget,
        )
        dropped = sum(p is None for p in fitted)
        report.say(stage, f"{len(rows) - dropped} of {len(rows)} {split} pairs fit {budget} tokens")
        if dropped > len(rows) / 2:
            report.say(
                stage,
                f"warning: {dropped} pairs' responses do not fit {budget} tokens: a larger "
                "context_length or a model with more positions keeps them",
            )


def leakage(settings: Settings, data: Data, report: Report, allow: bool) -> None:
    """Held-out prompts (evaluation, the feedback's test and judge splits) in training data."""
    held = {"evaluation prompts": prompts_of(data.tables["prompts_eval"], "prompt")}
    if data.pairs is not None:
        held["feedback test/judge prompts"] = {
            normalise_prompt(p): "data/feedback"
            for p in data.pairs[data.pairs["split"] != "train"]["prompt"]
        }
    trained = {
        "the SFT data": prompts_of(data.tables["sft"], "prompt"),
        "the policy's prompts": prompts_of(data.tables["prompts_train"], "prompt"),
    }
    corpus = normalise_prompt("\n".join(data.tables["corpus"]["text"]))
    found = []
    for what, prompts in held.items():
        for where, seen in trained.items():
            shared = prompts.keys() & seen.keys()
            if shared:
                files = sorted({seen[p] for p in shared} | {prompts[p] for p in shared})
                found.append(f"{len(shared)} {what} in {where} ({', '.join(files)})")
        in_corpus = [p for p in prompts if len(p) >= LEAK_MIN_CHARS and p in corpus]
        if in_corpus:
            found.append(f"{len(in_corpus)} {what} in the corpus")
    if not found:
        report.say("leakage", "none: no held-out prompt in the SFT data, policy prompts or corpus")
    for line in found:
        if allow:
            report.say("leakage", f"warning: {line} (allowed)")
        else:
            report.error(
                "leakage", f"{line}; remove them, or pass --allow-leakage (allow_leakage: true)"
            )


def prompts_of(table: pd.DataFrame, column: str) -> dict[str, str]:
    """normalised prompt -> the file it came from."""
    return {
        normalise_prompt(p): str(ref).rsplit(":", 1)[0]
        for p, ref in zip(table[column], table["_record"])
    }


def timings(settings: Settings, data: Data, tok, report: Report) -> None:
    """Each training stage's time from a few timed steps of its shape on this machine."""
    checkpoint = settings.pretrain.init_checkpoint
    torch.manual_seed(settings.seed)
    if checkpoint:
        lm = load_causal_lm(str(settings.path(checkpoint)), tok)
    else:
        lm = build_causal_lm(tok, settings.pretrain.architecture)
    positions = max_positions(lm)
    sft_tokens = typical_tokens(tok, data.tables["sft"]["prompt"] + data.tables["sft"]["response"])
    method = settings.section(settings.method.section, Config)
    rows: dict[str, tuple[Training, int | None, int]] = {
        "pretrain": (settings.pretrain, 0 if checkpoint else None, settings.pretrain.block_size),
        "sft": (settings.sft, len(data.tables["sft"]), sft_tokens),
    }
    pairs = data.pairs
    if pairs is not None:
        pair_tokens = typical_tokens(tok, pairs["prompt"] + pairs["chosen"]) * 2
        rows["reward"] = (settings.reward, int((pairs["split"] == "train").sum()), pair_tokens)
        rows["judge"] = (settings.judge, int((pairs["split"] == "judge").sum()), pair_tokens)
        if isinstance(method, Training):  # dpo: chosen and rejected rows
            rows["policy"] = (method, int((pairs["split"] == "train").sum()), pair_tokens)
    total = 0.0
    for stage, (cfg, n, width) in rows.items():
        if n == 0:
            report.say(stage, "~0 min (a checkpoint: not pretrained)")
            continue
        steps = cfg.steps if n is None else planned_steps(cfg, n)
        per_step = step_seconds(lm, cfg.batch_size, min(width, positions))
        minutes = steps * per_step / 60
        if cfg.max_minutes is not None:
            minutes = min(minutes, cfg.max_minutes)
        minutes *= getattr(cfg, "members", 1)
        total += minutes
        report.say(stage, f"~{minutes:.1f} min ({steps} steps at ~{per_step:.2f} s)")
    method = settings.section(settings.method.section, Config)
    if isinstance(method, Online):
        prompts = data.tables["prompts_train"]["prompt"].tolist()[:8]
        per_it = iteration_seconds(lm, tok, prompts, method)
        minutes = method.iterations * per_it / 60
        if method.max_minutes is not None:
            minutes = min(minutes, method.max_minutes)
        total += minutes
        report.say(
            "policy", f"~{minutes:.1f} min ({method.iterations} iterations at ~{per_it:.1f} s)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report.say(
        "estimate",
        f"~{total:.0f} min of training in all (plus ingest, selection and evaluation); peak "
        f"memory while timing {peak:.1f} GiB, {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M "
        "parameters",
    )


def typical_tokens(tok, texts: pd.Series) -> int:
    sample_texts = texts.sample(min(len(texts), 200), random_state=0).tolist() if len(texts) else []
    counts = sorted(len(ids) for ids in tok(sample_texts)["input_ids"]) if sample_texts else [1]
    return max(1, counts[len(counts) // 2])


def step_seconds(lm, batch_size: int, width: int, steps: int = 2) -> float:
    """A training step's seconds on a batch of batch_size rows of width tokens (AdamW)."""
    opt = torch.optim.AdamW(lm.parameters(), lr=0.0)
    ids = torch.randint(0, lm.config.vocab_size, (batch_size, width))
    lm.train()
    times = []
    for _ in range(steps + 1):  # the first step pays for allocation
        start = time.perf_counter()
        lm(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def iteration_seconds(lm, tok, prompts: list[str], cfg: Online) -> float:
    """An online iteration's seconds: sampling the batch's responses, then an update on them
    (one pass per epoch, forward and backward), from a sample of 8 prompts scaled up."""
    batch, epochs = len(prompts), 1
    if isinstance(cfg, Group):
        batch, epochs = cfg.prompts_per_iteration * cfg.group_size, cfg.epochs
    elif isinstance(cfg, PPO):
        batch, epochs = cfg.rollout_batch_size, cfg.ppo_epochs
    lm.eval()
    start = time.perf_counter()
    s = sample(lm, tok, prompts, cfg.max_new_tokens, cfg.temperature, torch.device("cpu"))
    sampling = (time.perf_counter() - start) * batch / len(prompts)
    width = s.model_inputs()["input_ids"].shape[1]
    update = step_seconds(lm, len(prompts), width, steps=1) * batch / len(prompts)
    return sampling * 2.5 + update * epochs  # scoring, reference and old log-probs: ~1.5 more


def print_report(report: Report, file) -> None:
    for line in report.lines + report.errors:
        print(line, file=file)
