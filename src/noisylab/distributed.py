"""The one helper for gathering per-example values across DDP ranks."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_across_ranks(values: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``values [B, ...]`` and ``index [B]`` from every rank (identity without DDP).

    Ranks may hold different batch sizes (the last batch of a shard): each pads to the longest
    and the padding is cut off after the gather.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values, index
    world = dist.get_world_size()
    size = torch.tensor([values.shape[0]], device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    pad = longest - values.shape[0]
    values_p = F.pad(values, (0, 0) * (values.dim() - 1) + (0, pad))
    index_p = F.pad(index, (0, pad))
    all_values = [torch.empty_like(values_p) for _ in range(world)]
    all_index = [torch.empty_like(index_p) for _ in range(world)]
    dist.all_gather(all_values, values_p)
    dist.all_gather(all_index, index_p)
    keep_v = [v[: int(s.item())] for v, s in zip(all_values, sizes)]
    keep_i = [i[: int(s.item())] for i, s in zip(all_index, sizes)]
    return torch.cat(keep_v), torch.cat(keep_i)
