"""The Trainer loop (models/train.py): width-grouped sampling, epochs, early stopping with the
best weights kept, the warning when the held-out figure worsens as the train loss falls, and
the checkpoint a resumed run starts from."""

import copy
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rlhf.models.batching import block_batch
from rlhf.models.config import Training
from rlhf.models.train import (
    Job,
    Target,
    WidthGroupedSampler,
    last_complete_checkpoint,
    planned_steps,
    train,
)
from tests.models.conftest import PROMPTS


def test_width_grouped_batches_cover_every_row_once_with_little_padding_in_random_order():
    widths = [random.Random(i).randint(5, 120) for i in range(1000)]
    torch.manual_seed(0)
    order = list(WidthGroupedSampler(widths, batch_size=8, megabatch=10))
    assert sorted(order) == list(range(1000))
    batches = [order[i : i + 8] for i in range(0, 1000, 8)]
    padded = sum(8 * max(widths[j] for j in b) for b in batches)
    assert sum(widths) / padded > 0.9  # drawn at random, a batch would be about 70% real tokens
    # not a sweep from long to short: the batches' widths rise and fall in random order
    tops = [max(widths[j] for j in b) for b in batches[:-1]]
    falls = sum(a > b for a, b in zip(tops, tops[1:]))
    assert 0.3 < falls / (len(tops) - 1) < 0.7


def test_a_short_batch_comes_last_so_the_loaders_batches_stay_aligned():
    torch.manual_seed(1)  # one megabatch: the batches are runs of the rows sorted by width
    order = list(WidthGroupedSampler(list(range(1003)), batch_size=8, megabatch=200))
    assert sorted(order) == list(range(1003))
    for i in range(0, 1000, 8):
        batch = sorted(order[i : i + 8])
        assert batch == list(range(batch[0], batch[0] + 8))
    assert order[1000:] == [1000, 1001, 1002]


def lm_job(tok, lm, tmp_path, cfg: Training, held_out: list[float], kept: dict) -> Job:
    """A real LM trained on demo text, whose held-out figure at the n-th evaluation is
    held_out[n] (lower is better); kept: step -> the weights at that evaluation."""
    rows = [torch.tensor(tok(PROMPTS[i % 2])["input_ids"][:12]) for i in range(16)]
    figures = iter(held_out)
    return Job(
        "lm",
        lm,
        rows,
        block_batch,
        cfg,
        0,
        torch.device("cpu"),
        tmp_path / "work",
        lambda metrics, step: None,
        evaluate=lambda m: {"eval_loss": next(figures)},
        target=Target("eval_loss", lower_is_better=True),
        snapshot=lambda m, step: kept.update({step: copy.deepcopy(m.state_dict())}),
    )


def test_epochs_set_the_steps_from_the_rows():
    cfg = Training(steps=7, batch_size=4, epochs=2.5)
    assert (
        planned_steps(cfg, 30) == 19
        and planned_steps(cfg.model_copy(update={"epochs": None}), 30) == 7
    )


def test_early_stopping_keeps_the_best_evaluations_weights(tok, lm, tmp_path):
    cfg = Training(steps=10, batch_size=4, lr=0.01, eval_every=1, log_every=1, early_stopping=2)
    model, kept = copy.deepcopy(lm), {}
    final = train(lm_job(tok, model, tmp_path, cfg, [3.0, 2.0, 2.5, 2.6, 1.0], kept))
    # evaluations at steps 1-4: the best at 2, then two without a better figure
    assert (final["steps"], final["stopped_early"], final["best_step"]) == (4, 1, 2)
    assert final["eval_loss"] == 2.0
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in kept[2].items())
    assert not all(torch.equal(now[k], v) for k, v in kept[4].items())


def test_a_held_out_figure_that_worsens_while_the_train_loss_falls_is_reported(
    tok, lm, tmp_path, capsys
):
    cfg = Training(steps=6, batch_size=4, lr=0.01, eval_every=2, log_every=1)
    final = train(lm_job(tok, copy.deepcopy(lm), tmp_path, cfg, [2.0, 2.5, 3.0], {}))
    assert final["diverged"] == 1 and final["steps"] == 6 and "best_step" not in final
    assert (
        "lm: warning: held-out eval_loss 3 at the end against 2 at step 2"
        in capsys.readouterr().err
    )


def save_checkpoint_folder(folder: Path) -> Path:
    """A folder with what a Trainer checkpoint holds: weights, optimizer state, its state file."""
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64, 64)}, str(folder / "model.safetensors"))
    torch.save({"exp_avg": torch.zeros(64, 64)}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    return folder


@pytest.mark.parametrize(
    "damage", ["model.safetensors", "optimizer.pt", "trainer_state.json", "no state"]
)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, damage, capsys):
    older = save_checkpoint_folder(tmp_path / "checkpoint-20")
    newest = save_checkpoint_folder(tmp_path / "checkpoint-40")
    if damage == "no state":  # killed while saving: the state file is written last
        (newest / "trainer_state.json").unlink()
    else:
        path = newest / damage
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    assert last_complete_checkpoint(tmp_path) == str(older)
    assert "checkpoint-40: not resumed" in capsys.readouterr().err


def test_whole_checkpoints_resume_from_the_newest_and_none_start_over(tmp_path):
    assert last_complete_checkpoint(tmp_path) is None
    save_checkpoint_folder(tmp_path / "checkpoint-20")
    newest = save_checkpoint_folder(tmp_path / "checkpoint-100")  # by number, not by name
    assert last_complete_checkpoint(tmp_path) == str(newest)


def test_a_safetensors_header_length_past_the_file_is_damage_not_a_crash(tmp_path):
    newest = save_checkpoint_folder(tmp_path / "checkpoint-40")
    (newest / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")

    assert last_complete_checkpoint(tmp_path, quiet=True) is None
