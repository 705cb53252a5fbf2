"""Count the FLOPs of one forward from the shapes it actually ran with.

Convolutions and linear layers are counted in a global forward hook (so patched modules, RAD's
dilated stride-4 conv and diffusers' subclasses are all seen); attention is counted by wrapping
``F.scaled_dot_product_attention`` -- the kernel the WebUI's "sdp" optimisation, the bench's ldm
UNets and diffusers all call -- from its q, k, v shapes, so windowed attention (4x the batch, 1/4 of
the tokens) is counted as run. One multiply-add is 2 FLOPs; biases, norms, softmax, activations
and resizes are left out (well under 1% of a UNet).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FlopCount", "attention_flops", "conv2d_flops", "count_flops", "linear_flops"]


def conv2d_flops(conv: nn.Conv2d, out: torch.Tensor) -> int:
    """2 x (output elements) x (input channels per group x kernel area)."""
    k = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    return 2 * out.numel() * k


def linear_flops(linear: nn.Linear, out: torch.Tensor) -> int:
    return 2 * out.numel() * linear.in_features


def attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """q @ k^T and attn @ v for (..., Lq, E) queries, (..., Lk, E) keys and (..., Lk, Ev) values."""
    batch = math.prod(q.shape[:-2])
    lq, e = q.shape[-2], q.shape[-1]
    lk, ev = k.shape[-2], v.shape[-1]
    return 2 * batch * lq * lk * (e + ev)


@dataclass
class FlopCount:
    """FLOPs by kind, filled while :func:`count_flops` is open."""

    conv: int = 0
    linear: int = 0
    attention: int = 0
    attention_calls: list[tuple[int, int, int]] = field(default_factory=list)  # (batch*heads, Lq, Lk)

    @property
    def total(self) -> int:
        return self.conv + self.linear + self.attention


@contextmanager
def count_flops() -> Iterator[FlopCount]:
    """Count every Conv2d / Linear forward and SDPA call made inside the block (any model, any device).

    Conv2d and Linear go through ``nn.Module.__call__``; ldm's and diffusers' attention look
    ``F.scaled_dot_product_attention`` up at call time, so swapping the attribute sees them all.
    """
    count = FlopCount()

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        if not torch.is_tensor(out):
            return
        if isinstance(module, nn.Conv2d):
            count.conv += conv2d_flops(module, out)
        elif isinstance(module, nn.Linear):
            count.linear += linear_flops(module, out)

    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs):
        count.attention += attention_flops(query, key, value)
        count.attention_calls.append((math.prod(query.shape[:-2]), query.shape[-2], key.shape[-2]))
        return sdpa(query, key, value, *args, **kwargs)

    handle = nn.modules.module.register_module_forward_hook(hook)
    F.scaled_dot_product_attention = counting_sdpa
    try:
        yield count
    finally:
        F.scaled_dot_product_attention = sdpa
        handle.remove()
