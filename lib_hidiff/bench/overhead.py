"""What "installed but disabled" costs per forward, without timing a whole noisy forward.

A gated-off installation adds only Python work: each hooked module takes nn.Module's hook path and
calls hooks that return at their first line, and a few Downsample/Upsample forwards go through a
wrapper. That work is counted on the real UNet (hooks and wrappers added by ``install``, each run
once per forward) and priced on a stand-in module with ``timeit`` (best of several runs, so a busy
machine does not inflate it). Each hook is priced on its own, so a module carrying two hooks is
charged the hook path twice: the estimate is an upper bound.
"""

from __future__ import annotations

import timeit
from typing import Any

import torch
import torch.nn as nn

import lib_hidiff as hd

__all__ = ["count_patches", "disabled_cost"]


class _Leaf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _snapshot(unet: nn.Module) -> dict[int, tuple[int, int, int, bool]]:
    out = {}
    for m in unet.modules():
        pre = m._forward_pre_hooks
        kw = sum(1 for k in pre if k in m._forward_pre_hooks_with_kwargs)
        out[id(m)] = (len(pre) - kw, kw, len(m._forward_hooks), "forward" in m.__dict__)
    return out


def count_patches(unet: nn.Module, layout: Any) -> dict[str, int]:
    """Hooks and forward wrappers that ``hd.install`` adds to this UNet (the UNet is left as found)."""
    if hd.installed(unet) is not None:
        raise RuntimeError("count_patches needs a UNet without HiDiffusion installed")
    before = _snapshot(unet)
    hd.install(unet, layout)
    try:
        after = _snapshot(unet)
    finally:
        hd.uninstall(unet)
    counts = {"pre_hooks": 0, "pre_hooks_kwargs": 0, "forward_hooks": 0, "wrapped_forwards": 0}
    for key, (pre, kw, fwd, wrapped) in after.items():
        b = before.get(key, (0, 0, 0, False))
        counts["pre_hooks"] += pre - b[0]
        counts["pre_hooks_kwargs"] += kw - b[1]
        counts["forward_hooks"] += fwd - b[2]
        counts["wrapped_forwards"] += int(wrapped and not b[3])
    return counts


def _per_call(module: nn.Module, x: torch.Tensor, number: int) -> float:
    return min(timeit.repeat(lambda: module(x), number=number, repeat=7)) / number


def _wrapped(leaf: _Leaf) -> _Leaf:
    """The patcher's wrapper shape: forward -> patched(original, ...) -> class forward."""
    gate = None

    def original(*args: Any, **kwargs: Any) -> Any:
        return type(leaf).forward(leaf, *args, **kwargs)

    def patched(orig: Any, x: torch.Tensor) -> torch.Tensor:
        if gate is None:
            return orig(x)
        return x

    def forward(*args: Any, **kwargs: Any) -> Any:
        return patched(original, *args, **kwargs)

    leaf.forward = forward
    return leaf


def hook_prices(number: int = 20000) -> dict[str, float]:
    """Seconds each kind of gated-off patch adds to one module call."""
    x = torch.zeros(1)
    base = _per_call(_Leaf(), x, number)
    pre, kw, fwd = _Leaf(), _Leaf(), _Leaf()
    pre.register_forward_pre_hook(lambda m, a: None)
    kw.register_forward_pre_hook(lambda m, a, k: None, with_kwargs=True)
    fwd.register_forward_hook(lambda m, a, o: None)
    return {
        "pre_hooks": _per_call(pre, x, number) - base,
        "pre_hooks_kwargs": _per_call(kw, x, number) - base,
        "forward_hooks": _per_call(fwd, x, number) - base,
        "wrapped_forwards": _per_call(_wrapped(_Leaf()), x, number) - base,
    }


def disabled_cost(unet: nn.Module, layout: Any) -> dict[str, float]:
    """Counts, prices and the estimated seconds per forward of a gated-off installation."""
    counts = count_patches(unet, layout)
    prices = hook_prices()
    seconds = sum(counts[k] * max(prices[k], 0.0) for k in counts)
    return {
        **{f"n_{k}": float(v) for k, v in counts.items()},
        **{f"s_{k}": v for k, v in prices.items()},
        "seconds": seconds,
    }
