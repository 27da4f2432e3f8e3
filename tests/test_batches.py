"""Batch boundaries of an epoch (``train.last_batch``): keep, drop, spread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noisylab.config import ConfigError, build_config
from noisylab.data.batching import EpochPlan, TrainBatches, batch_bounds
from noisylab.data.memory import TensorStore


def sizes(n, batch_size, last_batch):
    return np.diff(batch_bounds(n, batch_size, last_batch)).tolist()


def test_batch_sizes_of_each_choice():
    # 900 = 7 x 128 + 4
    assert sizes(900, 128, "keep") == [128] * 7 + [4]
    assert sizes(900, 128, "drop") == [128] * 7
    assert sizes(900, 128, "spread") == [129] * 4 + [128] * 3
    # a whole number of batches: all three agree
    assert sizes(1024, 128, "keep") == sizes(1024, 128, "drop") == sizes(1024, 128, "spread") == [128] * 8
    # fewer examples than one batch: spread makes one batch of all of them, drop makes none
    assert sizes(100, 128, "spread") == sizes(100, 128, "keep") == [100]
    assert sizes(100, 128, "drop") == []
    assert sizes(0, 128, "spread") == []
    with pytest.raises(ValueError, match="unknown last_batch"):
        batch_bounds(10, 4, "pad")


@pytest.mark.parametrize("world_size", [1, 2])
def test_spread_trains_every_example_once_in_batches_no_smaller_than_asked(world_size):
    n, batch = 37, 8  # per rank 37 (or 19): 4 batches of 9-10 (or 2 of 9-10)
    x = torch.arange(n, dtype=torch.float32)[:, None]
    ranks = [TrainBatches(EpochPlan(np.zeros(n, dtype=np.int64), batch, last_batch="spread", rank=r,
                                    world_size=world_size), TensorStore(x, "cpu"), "cpu") for r in range(world_size)]
    seen = []
    for tb in ranks:
        batches = [b.index.tolist() for b in tb.epoch(seed=3)]
        assert len(batches) == len(tb) == (37 // 8 if world_size == 1 else 19 // 8)
        assert min(map(len, batches)) >= batch
        seen += sum(batches, [])
    # DistributedSampler-style padding repeats one example on the second rank; nothing is left out
    assert sorted(set(seen)) == list(range(n)) and len(seen) == -(-n // world_size) * world_size


def test_old_drop_last_key_still_reads_and_cannot_be_mixed_with_last_batch():
    assert build_config({"train": {"drop_last": True}}).train.last_batch == "drop"
    assert build_config({"train": {"drop_last": False}}).train.last_batch == "keep"
    with pytest.raises(ConfigError, match="give only last_batch"):
        build_config({"train": {"drop_last": True, "last_batch": "keep"}})
