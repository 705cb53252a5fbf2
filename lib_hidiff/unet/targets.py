"""The modules HiDiffusion patches in one UNet, and how the backend calls them.

:class:`~.layout.UNetLayout` says *what* happens where, in ldm block numbers shared by every backend;
:class:`UNetTargets` says which module of this particular UNet each number is, and
:class:`CallConvention` the argument names its calls use. The patcher reads only these two, so one
patcher serves ldm/sgm and diffusers UNets alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .layout import UNetLayout, child, self_attentions

__all__ = ["LDM", "CallConvention", "ControlNetSinks", "UNetTargets", "ldm_targets", "targets_for"]


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
    )


def targets_for(unet: nn.Module, layout: UNetLayout) -> UNetTargets:
    """The targets of ``unet`` for the backend its layout was read with."""
    if layout.backend == "diffusers":
        from .layout_diffusers import diffusers_targets

        return diffusers_targets(unet, layout)
    return ldm_targets(unet, layout)
