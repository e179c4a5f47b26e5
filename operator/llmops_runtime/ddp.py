"""Data-parallel gradient averaging whose result does not depend on DDP's bucket layout.

Why this exists (issue 15): torch's ``DistributedDataParallel`` packs gradients into
buckets and all-reduces each bucket as one flat buffer. It packs them one way for the first
backward of a process (parameter order, one bucket) and then *rebuilds* the buckets once,
in the order gradients became ready. A collective over three or more ranks sums an element
in an order that depends on where the element sits in the buffer (gloo's ring and NCCL's
ring/tree cut the buffer into per-rank segments, and each segment's sum starts at a
different rank); floating-point addition is not associative, so the same gradients
averaged under two layouts differ in the last bits. An uninterrupted run reduces step 1
with the first layout and every later step with the rebuilt one; a gang resumed from step
``k`` reduces step ``k+1`` with the first layout again. Every restart therefore perturbs
one update, and the run drifts away from the uninterrupted one (two ranks hide it:
``a + b == b + a`` exactly).

The fix: a DDP communication hook that all-reduces each parameter's gradient as its own
collective. Where an element is summed then depends only on the parameter's size and the
world, never on the bucket around it, so every step of every attempt reduces exactly as the
uninterrupted run does. It costs one collective per parameter instead of per bucket: on
gloo/CPU (small models) that is noise; NCCL queues them back to back on one stream.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations as objects.
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def per_parameter_allreduce(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average every gradient of ``bucket`` across ranks, one collective per parameter."""
    group = process_group if process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    futures = []
    # gradients() are views into buffer(): reducing them in place fills the bucket.
    for grad in bucket.gradients():
        grad.div_(world)
        futures.append(dist.all_reduce(grad, group=group, async_op=True).get_future())
    buffer = bucket.buffer()
    return torch.futures.collect_all(futures).then(lambda _: buffer)


def wrap(model: nn.Module, session: Any, **ddp_options: Any) -> nn.Module:
    """``model`` under DDP with layout-independent averaging (itself when one rank)."""
    if session.world_size <= 1:
        return model
    if session.device.type == "cuda":
        ddp_options.setdefault("device_ids", [session.local_rank])
    ddp = nn.parallel.DistributedDataParallel(model, **ddp_options)
    ddp.register_comm_hook(None, per_parameter_allreduce)
    return ddp
