"""The modules HiDiffusion patches in one UNet, and how the backend calls them.

:class:`~.layout.UNetLayout` says *what* happens where, in ldm block numbers shared by every backend;
:class:`UNetTargets` says which module of this particular UNet each number is, and
:class:`CallConvention` the argument names its calls use. The patcher reads only these two, so one
patcher serves ldm/sgm and diffusers UNets alike.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch.nn as nn

from .layout import UNetLayout, child, self_attentions

__all__ = [
    "LDM",
    "CallConvention",
    "ControlDictSinks",
    "ControlNetSinks",
    "UNetTargets",
    "ldm_targets",
    "targets_for",
]


@dataclass(frozen=True)
class CallConvention:
    """Names of the arguments the patches read; each is also accepted at its usual position."""

    timestep: str  # the UNet's timestep argument (position 1)
    hidden: str  # the (B, C, H, W) input of transformers and Upsamples (position 0)
    attn_x: str  # attn1's token input (position 0)
    attn_context: str  # attn1's context / encoder states (position 1)
    attn_mask: str  # attn1's attention mask (position 2)
    upsample_size: str | None  # the Upsample's output-size argument (position 1); None: it has none


LDM = CallConvention(
    timestep="timesteps",
    hidden="x",
    attn_x="x",
    attn_context="context",
    attn_mask="mask",
    upsample_size=None,
)


@dataclass(frozen=True)
class ControlNetSinks:
    """Where a diffusers UNet consumes ControlNet residuals (added after the down path).

    Under RAU-Net the skips are smaller than the residuals a ControlNet computed at full size, so the
    patcher takes the residuals out of the UNet call and adds them, resized to the real skip sizes,
    where the up blocks receive their skips and after the middle block.
    """

    down_arg: str  # UNet keyword holding the per-skip residuals
    mid_arg: str  # UNet keyword holding the middle-block residual
    intrablock_arg: str  # UNet keyword of T2I-Adapter residuals (added inside the down path)
    skips_arg: str  # up-block keyword (position 1) holding that block's skips
    up_blocks: tuple[tuple[nn.Module, tuple[int, ...]], ...]  # (up block, input-block numbers of its skips)
    mid: nn.Module


@dataclass(frozen=True)
class ControlDictSinks:
    """Where an ldm UNet whose forward takes a ``control`` dict adds the residuals in it.

    Forge's backend UNet (and ComfyUI's, which it derives from) receives ControlNet / T2I-Adapter
    residuals as ``control = {"input": [...], "middle": [...], "output": [...]}`` and adds them with
    a ``control[name].pop()`` (from the end of the list): after every input block ("input"), after
    the middle block ("middle") and onto every skip before it is concatenated ("output"; the last
    entry goes to the last skip). Under RAU-Net the deep maps are smaller than the residuals, so the
    patcher resizes the entry each map is about to receive, as soon as the map exists (forward hooks
    on these blocks); the UNet then adds it itself.
    """

    arg: str  # the UNet forward's keyword holding the dict
    position: int  # ... and its position when given positionally
    inputs: tuple[nn.Module, ...]  # input block i: its output is map i (and skip i)
    middle: nn.Module


@dataclass(frozen=True)
class UNetTargets:
    """The modules one UNet's patches sit on (input/output numbers as in UNetLayout)."""

    convention: CallConvention
    entry: nn.Module  # receives the latent first: the call plan starts here
    skips: dict[int, nn.Module]  # input block i -> the module whose output is skip i
    ca_output: nn.Module  # the module ending output block layout.ca_output
    rad: nn.Module  # the RAD Downsample (its forward is overridden)
    rad_conv: nn.Conv2d  # ... and the conv it runs, with RAD's stride/padding/dilation during RAD
    upsamples: tuple[tuple[int, int, nn.Module], ...]  # (output block, skip it targets, Upsample)
    transformers: tuple[tuple[nn.Module, tuple[nn.Module, ...]], ...]  # MSW-MSA: (transformer, its attn1s)
    controlnet: ControlNetSinks | None = None
    control: ControlDictSinks | None = None


def _control_position(unet: nn.Module) -> int | None:
    """Position (after self) of the forward's ``control`` parameter; None where it has none (A1111)."""
    try:
        params = list(inspect.signature(type(unet).forward).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("control") - 1 if "control" in params else None


def ldm_targets(unet: nn.Module, layout: UNetLayout) -> UNetTargets:
    """The targets in an ldm / sgm UNetModel: input/output blocks are modules of their own."""
    inputs, outputs = unet.input_blocks, unet.output_blocks
    down = child(inputs[layout.rad_input], "Downsample")
    msw = []
    for side, idx in layout.msw_blocks:
        block = (inputs if side == "input" else outputs)[idx]
        msw.append((child(block, "SpatialTransformer"), tuple(self_attentions(block))))
    return UNetTargets(
        convention=LDM,
        entry=inputs[0],
        skips=dict(enumerate(inputs)),
        ca_output=outputs[layout.ca_output],
        rad=down,
        rad_conv=down.op,
        upsamples=tuple((j, skip, child(outputs[j], "Upsample")) for j, skip in layout.upsamples),
        transformers=tuple(msw),
        control=None
        if (position := _control_position(unet)) is None
        else ControlDictSinks("control", position, tuple(inputs), unet.middle_block),
    )


def targets_for(unet: nn.Module, layout: UNetLayout) -> UNetTargets:
    """The targets of ``unet`` for the backend its layout was read with."""
    if layout.backend == "diffusers":
        from .layout_diffusers import diffusers_targets

        return diffusers_targets(unet, layout)
    return ldm_targets(unet, layout)
