"""RAU-Net operators: resolution-aware down/up-sampling and the CA pool/unpool pair.

RAD runs the block's own Downsample (and so its own conv module) with the conv set to stride 4 /
padding 2 / dilation 2, so whatever the host hooks into the Downsample or ``Conv2d.forward``
(LoRA/LoCon, fp8 casts, tiling's circular padding, lowvram, diffusers' manual padding) still
applies. RAU resizes straight to the skip tensor's size before the Upsample's conv.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ca_pool", "rad_conv", "resize", "upsample_to"]

_RAD = {"stride": (4, 4), "padding": (2, 2), "dilation": (2, 2)}


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """F.interpolate to an exact size; half/bfloat16 go through float32 where kernels may be missing."""
    if tuple(x.shape[-2:]) == tuple(size) and mode in ("nearest", "nearest-exact"):
        return x
    dtype = x.dtype
    upcast = dtype == torch.bfloat16 or (dtype == torch.float16 and mode not in ("nearest", "nearest-exact"))
    y = x.float() if upcast else x
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    y = F.interpolate(y, size=tuple(size), mode=mode, **kwargs)
    return y.to(dtype) if upcast else y


@contextmanager
def rad_conv(op: nn.Conv2d) -> Iterator[nn.Conv2d]:
    """The Downsample conv as a x4 dilated conv (output ceil(H/4)) inside the block, restored after."""
    saved = {name: getattr(op, name) for name in _RAD}
    saved_pad = getattr(op, "_reversed_padding_repeated_twice", None)
    try:
        for name, value in _RAD.items():
            setattr(op, name, value)
        if op.padding_mode != "zeros":  # e.g. the WebUI's "Tiling" (circular) pads from this cache
            op._reversed_padding_repeated_twice = [2, 2, 2, 2]
        yield op
    finally:
        for name, value in saved.items():
            setattr(op, name, value)
        if saved_pad is not None:
            op._reversed_padding_repeated_twice = saved_pad


def upsample_to(up: nn.Module, x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """An ldm/sgm Upsample that resizes to the skip's exact size instead of doubling."""
    x = resize(x, size, mode)
    if getattr(up, "use_conv", False):
        x = up.conv(x)
    return x


def ca_pool(h: torch.Tensor) -> torch.Tensor:
    """The CA downscale: 2x2 average pool, ceil mode (odd sides round up like the stride-2 convs)."""
    return F.avg_pool2d(h, kernel_size=2, ceil_mode=True)
