"""MSW-MSA: shifted 2x2-window self-attention, as the official HiDiffusion code computes it.

The tokens entering ``attn1`` (B, H*W, C) are cut into exactly four windows of ceil(H/2) x ceil(W/2)
after a cyclic shift of (wh//4*k, ww//4*k); the four windows become four batch rows, so any
attention kernel runs them unchanged. Odd maps are bicubic-resized to even and back, as upstream.
Because attn1's projections act per token, windowing its input and un-windowing its output is the
whole algorithm: norms, attn2 and the feed-forward never see the windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Windowing", "shift_for", "window_partition", "window_reverse"]


@dataclass(frozen=True)
class Windowing:
    """How one attn1 call was windowed, needed to undo it."""

    h: int
    w: int
    wh: int
    ww: int
    shift: tuple[int, int]

    @property
    def odd(self) -> bool:
        return self.h % 2 != 0 or self.w % 2 != 0


def plan_windows(h: int, w: int, k: int) -> Windowing:
    """Window size and shift for a feature map of h x w tokens and shift index k in 0..3."""
    wh, ww = math.ceil(h / 2), math.ceil(w / 2)
    return Windowing(h, w, wh, ww, (wh // 4 * k, ww // 4 * k))


def _resize_tokens(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (B, H, W, C) token grid."""
    y = x.permute(0, 3, 1, 2)
    dtype = y.dtype
    if dtype in (torch.float16, torch.bfloat16):
        y = y.float()  # bicubic has no half kernels on every backend
    y = F.interpolate(y.contiguous(), size=size, mode="bicubic")
    return y.to(dtype).permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, win: Windowing) -> torch.Tensor:
    """(B, H*W, C) tokens -> (4B, wh*ww, C) windows; row b*4 + 2*row + col."""
    b, _, c = x.shape
    x = x.reshape(b, win.h, win.w, c)
    if win.odd:
        x = _resize_tokens(x, (2 * win.wh, 2 * win.ww))
    # Upstream rolls only when the vertical shift is non-zero; kept for equivalence on tiny maps.
    if win.shift[0] > 0:
        x = torch.roll(x, shifts=(-win.shift[0], -win.shift[1]), dims=(1, 2))
    x = x.reshape(b, 2, win.wh, 2, win.ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * 4, win.wh * win.ww, c)


def window_reverse(y: torch.Tensor, win: Windowing) -> torch.Tensor:
    """Inverse of :func:`window_partition` on attn1's output (4B, wh*ww, C') -> (B, H*W, C')."""
    c = y.shape[-1]
    b = y.shape[0] // 4
    y = y.reshape(b, 2, 2, win.wh, win.ww, c).permute(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, 2 * win.wh, 2 * win.ww, c)
    if win.shift[0] > 0:
        y = torch.roll(y, shifts=win.shift, dims=(1, 2))
    if win.odd:
        y = _resize_tokens(y, (win.h, win.w))
    return y.reshape(b, win.h * win.w, c)


_MIX = 0x9E3779B97F4A7C15


def shift_for(seed: int, step_key: int, block: int) -> int:
    """Shift index k in 0..3 for one (step, block), from a private generator.

    cond and uncond of the same step evaluated in separate UNet calls get the same k, the same seed
    gives the same k sequence, and the global torch RNG is never consumed.
    """
    mixed = ((int(seed) * _MIX) ^ (int(step_key) * 0x100000001B3) ^ (int(block) * 0xC2B2AE3D27D4EB4F)) % (
        2**63 - 1
    )
    gen = torch.Generator(device="cpu").manual_seed(mixed)
    return int(torch.randint(0, 4, (1,), generator=gen).item())
