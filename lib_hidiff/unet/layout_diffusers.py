"""A diffusers ``UNet2DConditionModel`` in ldm's block numbering.

ldm lists every skip-producing step of the input path as one ``input_blocks[i]``; diffusers groups
them into down blocks. Numbered the ldm way, input block 0 is ``conv_in``, then each down block
contributes one block per (resnet, attention) pair and one for its ``downsamplers[0]`` -- exactly
the order of diffusers' ``down_block_res_samples``. Output block j is pair j of the up blocks, the
last pair of an up block also holding its ``upsamplers[0]``. With that numbering the rules,
presets and shift block ids of :mod:`.layout` apply unchanged, so both backends compute the same
image from the same weights.

diffusers is never imported: classes are recognised by name, as :mod:`.layout` does for ldm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .layout import Skeleton, UNetLayout, UnsupportedUNet, _linear
from .targets import CallConvention, ControlNetSinks, UNetTargets

__all__ = ["DIFFUSERS", "diffusers_targets", "is_diffusers_unet", "skeleton"]

DIFFUSERS = CallConvention(
    timestep="timestep",
    hidden="hidden_states",
    attn_x="hidden_states",
    attn_context="encoder_hidden_states",
    attn_mask="attention_mask",
    upsample_size="output_size",
)

# Blocks whose forward runs (resnet, attention) pairs, then the resampler, as the numbering assumes.
DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")


def is_diffusers_unet(unet: nn.Module) -> bool:
    return all(hasattr(unet, name) for name in ("conv_in", "down_blocks", "up_blocks", "mid_block"))


@dataclass(frozen=True)
class _Block:
    """One ldm-numbered block of a diffusers UNet."""

    level: int
    last: nn.Module  # the module whose output ends the block (a skip, on the input side)
    transformer: nn.Module | None = None
    resampler: nn.Module | None = None  # Downsample2D / Upsample2D


def _transformer(block: nn.Module, k: int) -> nn.Module | None:
    attentions = getattr(block, "attentions", None)
    if attentions is None or k >= len(attentions):
        return None
    return attentions[k]


def _attn1s(transformer: nn.Module | None) -> tuple[nn.Module, ...]:
    if transformer is None:
        return ()
    return tuple(tb.attn1 for tb in getattr(transformer, "transformer_blocks", []) if hasattr(tb, "attn1"))


def _one(modules: nn.ModuleList | None, what: str) -> nn.Module | None:
    if not modules:
        return None
    if len(modules) != 1:
        raise UnsupportedUNet(f"diffusers UNet block with {len(modules)} {what}: not a supported layout")
    return modules[0]


def _check_kind(block: nn.Module, allowed: tuple[str, ...], side: str) -> None:
    name = type(block).__name__
    if name not in allowed:
        raise UnsupportedUNet(
            f"diffusers UNet with a {name} {side} block: HiDiffusion supports {' / '.join(allowed)}"
        )


def _inputs(unet: nn.Module) -> list[_Block]:
    blocks = [_Block(0, unet.conv_in)]
    for d, block in enumerate(unet.down_blocks):
        _check_kind(block, DOWN_BLOCKS, "down")
        for k, resnet in enumerate(block.resnets):
            tr = _transformer(block, k)
            blocks.append(_Block(d, tr if tr is not None else resnet, tr))
        down = _one(getattr(block, "downsamplers", None), "downsamplers")
        if down is not None:
            blocks.append(_Block(d, down, resampler=down))
    return blocks


def _outputs(unet: nn.Module) -> list[_Block]:
    blocks = []
    n_levels = len(unet.up_blocks)
    for u, block in enumerate(unet.up_blocks):
        _check_kind(block, UP_BLOCKS, "up")
        up = _one(getattr(block, "upsamplers", None), "upsamplers")
        for k, resnet in enumerate(block.resnets):
            tr = _transformer(block, k)
            last_pair = k == len(block.resnets) - 1
            end = up if (last_pair and up is not None) else (tr if tr is not None else resnet)
            blocks.append(_Block(n_levels - 1 - u, end, tr, up if last_pair else None))
    return blocks


def _resizable(up: nn.Module) -> bool:
    """An Upsample2D that interpolates, then convolves: it can be sent to any output size."""
    return (
        type(up).__name__ == "Upsample2D"
        and getattr(up, "interpolate", True)
        and not getattr(up, "use_conv_transpose", False)
    )


def skeleton(unet: nn.Module) -> Skeleton:
    """Read a diffusers UNet2DConditionModel into the shared skeleton."""
    inputs, outputs = _inputs(unet), _outputs(unet)
    if len(inputs) != len(outputs):
        raise UnsupportedUNet(
            f"diffusers UNet with {len(inputs)} skips and {len(outputs)} up-path blocks is not a supported layout"
        )
    downs = tuple(i for i, b in enumerate(inputs) if b.resampler is not None)
    for i in downs:
        if type(inputs[i].resampler).__name__ != "Downsample2D":
            raise UnsupportedUNet(
                f"diffusers UNet with a {type(inputs[i].resampler).__name__} downsampler: not a supported layout"
            )
    ups = tuple(j for j, b in enumerate(outputs) if b.resampler is not None)
    for j in ups:
        if not _resizable(outputs[j].resampler):
            raise UnsupportedUNet(
                "diffusers upsampler that does not interpolate (transposed conv or custom): "
                "RAU-Net needs an interpolating Upsample2D"
            )
    first = next((b.transformer for b in inputs if b.transformer is not None), None)
    return Skeleton(
        backend="diffusers",
        in_levels=tuple(b.level for b in inputs),
        out_levels=tuple(b.level for b in outputs),
        downs=downs,
        ups=ups,
        in_attn1=tuple(len(_attn1s(b.transformer)) for b in inputs),
        out_attn1=tuple(len(_attn1s(b.transformer)) for b in outputs),
        attn_levels=frozenset(b.level for b in inputs if b.transformer is not None),
        linear_proj=_linear(getattr(first, "proj_in", None)),
        in_channels=int(getattr(unet.conv_in, "in_channels", 4)),
        conv_downs=frozenset(
            i
            for i in downs
            if getattr(inputs[i].resampler, "use_conv", False)
            and isinstance(getattr(inputs[i].resampler, "conv", None), nn.Conv2d)
        ),
    )


def _controlnet_sinks(unet: nn.Module, n_skips: int) -> ControlNetSinks | None:
    """Which skips each up block receives: diffusers hands the last len(resnets) skips to each in turn."""
    if unet.mid_block is None:
        return None
    remaining = list(range(n_skips))
    up_blocks = []
    for block in unet.up_blocks:
        k = len(block.resnets)
        up_blocks.append((block, tuple(remaining[-k:])))
        remaining = remaining[:-k]
    return ControlNetSinks(
        down_arg="down_block_additional_residuals",
        mid_arg="mid_block_additional_residual",
        intrablock_arg="down_intrablock_additional_residuals",
        skips_arg="res_hidden_states_tuple",
        up_blocks=tuple(up_blocks),
        mid=unet.mid_block,
    )


def diffusers_targets(unet: nn.Module, layout: UNetLayout) -> UNetTargets:
    """The modules behind the layout's ldm numbers in a diffusers UNet2DConditionModel."""
    inputs, outputs = _inputs(unet), _outputs(unet)
    rad = inputs[layout.rad_input].resampler
    msw = []
    for side, idx in layout.msw_blocks:
        tr = (inputs if side == "input" else outputs)[idx].transformer
        msw.append((tr, _attn1s(tr)))
    return UNetTargets(
        convention=DIFFUSERS,
        entry=unet.conv_in,
        skips={i: b.last for i, b in enumerate(inputs)},
        ca_output=outputs[layout.ca_output].last,
        rad=rad,
        rad_conv=rad.conv,
        upsamples=tuple((j, skip, outputs[j].resampler) for j, skip in layout.upsamples),
        transformers=tuple(msw),
        controlnet=_controlnet_sinks(unet, len(inputs)),
    )
