"""The Trainer loop's width-grouped sampling (models/train.py)."""

import random

import torch

from rlhf.models.train import WidthGroupedSampler


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
