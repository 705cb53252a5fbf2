"""The ``control`` dict rule: ControlNet / T2I-Adapter residuals a UNet adds itself, fitted to RAU-Net.

UNets of the ComfyUI lineage (Forge's backend UNet, ComfyUI's own) take residuals as
``control = {"input": [...], "middle": [...], "output": [...]}`` and add each with
``h += control[name].pop()``: an "input" entry right after every input block, a "middle" entry after
the middle block, an "output" entry onto skip i when the up path takes it (the last entry to the last
skip). The residuals are computed at the full latent size, so under RAU-Net the deep maps are smaller.
Each call gets a copy of the dict (fresh lists: the UNet pops them, we replace entries), and as soon as
a map exists the entries it will receive are area-resized to it -- the rule the core uses for diffusers
ControlNet residuals. Entries that already fit are left as they are (vanilla sizes: bit-identical).
Both the core's patcher (blocks called as modules) and the ComfyUI targets (hooks on each block's last
layer) call these.
"""

from __future__ import annotations

from typing import Any

import torch

from .raunet import resize

__all__ = ["copy_control", "fit_entry", "fit_input_block", "fit_middle_block"]


def copy_control(control: Any) -> Any:
    """The call's control dict with fresh lists (the UNet pops them; we replace entries)."""
    if not isinstance(control, dict):
        return control
    return {k: list(v) if isinstance(v, list) else v for k, v in control.items()}


def fit_entry(entry: Any, like: torch.Tensor) -> Any:
    """A residual at the spatial size of the map it is added to; None / non-spatial as they are."""
    if not torch.is_tensor(entry) or entry.dim() != like.dim() or entry.dim() < 3:
        return entry
    size = tuple(like.shape[-2:])
    return entry if tuple(entry.shape[-2:]) == size else resize(entry, size, "area")


def fit_input_block(control: dict, idx: int, n_blocks: int, h: torch.Tensor) -> None:
    """Input block ``idx`` of ``n_blocks`` made map ``h``: fit the entries that map receives, in place."""
    inputs = control.get("input")
    if isinstance(inputs, list) and inputs:  # added to this map right after the block
        inputs[-1] = fit_entry(inputs[-1], h)
    outputs = control.get("output")
    if isinstance(outputs, list):  # added to skip idx when the up path takes it
        k = idx - (n_blocks - len(outputs))
        if 0 <= k < len(outputs):
            outputs[k] = fit_entry(outputs[k], h)


def fit_middle_block(control: dict, h: torch.Tensor) -> None:
    """The middle block made map ``h``: fit its entry, in place."""
    middle = control.get("middle")
    if isinstance(middle, list) and middle:
        middle[-1] = fit_entry(middle[-1], h)
