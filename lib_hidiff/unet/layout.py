"""Find where HiDiffusion goes in a UNet by walking its modules.

Nothing here trusts flags such as ``is_sdxl`` (the WebUI sets it for the SDXL refiner too): the
family is read from the structure -- how many resolution levels the input path has (one more than
its Downsample count) and which levels carry transformers. Modules are recognised by class name so
that ldm, sgm, diffusers and look-alike test doubles are handled without importing any of them.

Two backends share one set of rules. Each reads its UNet into a :class:`Skeleton` in ldm's block
numbering (``input_blocks[i]`` / ``output_blocks[j]``; a diffusers UNet is numbered the same way by
:mod:`.layout_diffusers`), and :func:`inspect_unet` turns the skeleton into a :class:`UNetLayout`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch.nn as nn

__all__ = ["FAMILY_MAPS", "Skeleton", "UNetLayout", "UnsupportedUNet", "inspect_unet"]


class UnsupportedUNet(Exception):
    """The UNet's layout is not one HiDiffusion's rules apply to (one-line reason)."""


@dataclass(frozen=True)
class FamilyMap:
    """Where the parts go, by resolution level (data, not branches)."""

    native: int  # native latent side
    rad_level: int  # the Downsample that leaves this level becomes RAD; its mirror Upsample is RAU
    ca_level: int  # CA pool after the first block of this level, unpool before its last skip concat
    msw_level: int  # MSW-MSA on every self-attention of this level


FAMILY_MAPS: dict[str, FamilyMap] = {
    # SD 1.x / 2.x: RAD at input 3 / RAU at output 8, CA at input 4 / output 7, MSW-MSA at the top level.
    "sd1": FamilyMap(native=64, rad_level=0, ca_level=1, msw_level=0),
    "sd2": FamilyMap(native=64, rad_level=0, ca_level=1, msw_level=0),
    # SDXL: RAD at input 6 / RAU at output 2, CA at input 4 / output 4, MSW-MSA at level 1.
    "sdxl": FamilyMap(native=128, rad_level=1, ca_level=1, msw_level=1),
}


@dataclass(frozen=True)
class UNetLayout:
    """Where HiDiffusion acts in one UNet. Indices are ldm's ``input_blocks`` / ``output_blocks``.

    A diffusers UNet uses the same numbering (see :mod:`.layout_diffusers`), so the two backends
    share presets, block ids of the window shifts and every rule.
    """

    family: str  # "sd1", "sd2" or "sdxl"
    native: tuple[int, int]  # native latent size (h, w); the resolution gate compares areas with it
    n_blocks: int  # len(input_blocks) == len(output_blocks)
    rad_input: int  # input block holding the RAD Downsample
    rau_output: int  # output block holding the mirrored (RAU) Upsample
    ca_input: int  # CA pool after this input block (before its skip is pushed)
    ca_output: int  # CA unpool after this output block
    upsamples: tuple[tuple[int, int], ...]  # (output block, skip input block whose size it targets)
    msw_blocks: tuple[tuple[str, int], ...]  # ("input" | "output", block index) with windowed attn1
    n_attn1: int  # number of self-attention modules MSW-MSA wraps
    in_channels: int = 4  # 9 for inpainting models (latent + mask + masked image)
    backend: str = "ldm"  # "ldm" (ldm / sgm UNetModel) or "diffusers" (UNet2DConditionModel)

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 9

    def with_native(self, side_or_hw: int | tuple[int, int]) -> UNetLayout:
        """A copy with another native size (e.g. 96 for SD 2.x 768-v models)."""
        hw = (side_or_hw, side_or_hw) if isinstance(side_or_hw, int) else tuple(side_or_hw)
        return dataclasses.replace(self, native=hw)


@dataclass(frozen=True)
class Skeleton:
    """A UNet's blocks in ldm numbering, as a backend reads them: all the rules need to know."""

    backend: str
    in_levels: tuple[
        int, ...
    ]  # resolution level of each input block (a Downsample block: the level it leaves)
    out_levels: tuple[int, ...]  # the same for output blocks (an Upsample block: the level it leaves)
    downs: tuple[int, ...]  # input blocks holding a Downsample
    ups: tuple[int, ...]  # output blocks holding an Upsample
    in_attn1: tuple[int, ...]  # self-attention modules MSW-MSA can wrap, per input block
    out_attn1: tuple[int, ...]
    attn_levels: frozenset[int]  # levels whose input blocks hold a transformer
    linear_proj: bool  # the first transformer projects with nn.Linear (SD 2.x, SDXL)
    in_channels: int
    conv_downs: frozenset[int]  # Downsample blocks running a 2D nn.Conv2d, which RAD can reuse


# -- ldm / sgm -----------------------------------------------------------------------------------


def _linear(proj_in: nn.Module | None) -> bool:
    """Does the transformer project with a linear layer (SD 2.x, SDXL) rather than a 1x1 conv (SD 1.x)?

    Asked as "not a conv": hosts swap in their own Linear classes (Forge's cast-per-call Linear is an
    nn.Module, not an nn.Linear), while their Conv2d classes stay nn.Conv2d subclasses.
    """
    return proj_in is not None and not isinstance(proj_in, nn.Conv2d)


def child(block: nn.Module, cls_name: str) -> nn.Module | None:
    """The first direct child of a UNet block whose class is named ``cls_name`` (ldm, sgm alike)."""
    return next((m for m in block.children() if type(m).__name__ == cls_name), None)


def self_attentions(block: nn.Module) -> list[nn.Module]:
    """The attn1 modules of the transformer blocks inside a UNet block's SpatialTransformer."""
    st = child(block, "SpatialTransformer")
    if st is None:
        return []
    return [tb.attn1 for tb in getattr(st, "transformer_blocks", []) if hasattr(tb, "attn1")]


def _levels(blocks: nn.ModuleList, marker: str, start: int, step: int) -> list[int]:
    """Resolution level of each block; the level changes after each block holding ``marker``."""
    levels, level = [], start
    for block in blocks:
        levels.append(level)
        if child(block, marker) is not None:
            level += step
    return levels


def block_levels(unet: nn.Module) -> tuple[list[int], list[int]]:
    """Resolution level of every input and output block of an ldm UNet (0 = full resolution).

    A Downsample block belongs to the level it leaves, an Upsample block to the level it leaves.
    """
    in_levels = _levels(unet.input_blocks, "Downsample", 0, 1)
    return in_levels, _levels(unet.output_blocks, "Upsample", in_levels[-1], -1)


def is_ldm_unet(unet: nn.Module) -> bool:
    return all(hasattr(unet, name) for name in ("input_blocks", "middle_block", "output_blocks"))


def _ldm_skeleton(unet: nn.Module) -> Skeleton:
    inputs, outputs = unet.input_blocks, unet.output_blocks
    if len(inputs) != len(outputs) or len(inputs) < 4:
        raise UnsupportedUNet(
            f"UNet with {len(inputs)} input and {len(outputs)} output blocks is not a supported layout"
        )
    in_levels, out_levels = block_levels(unet)
    downs = tuple(i for i, blk in enumerate(inputs) if child(blk, "Downsample") is not None)
    conv_downs = frozenset(
        i
        for i in downs
        if isinstance(getattr(child(inputs[i], "Downsample"), "op", None), nn.Conv2d)
        and getattr(child(inputs[i], "Downsample"), "dims", 2) == 2
    )
    first_st = next(
        (st for st in (child(blk, "SpatialTransformer") for blk in inputs) if st is not None), None
    )

    return Skeleton(
        backend="ldm",
        in_levels=tuple(in_levels),
        out_levels=tuple(out_levels),
        downs=downs,
        ups=tuple(j for j, blk in enumerate(outputs) if child(blk, "Upsample") is not None),
        in_attn1=tuple(len(self_attentions(blk)) for blk in inputs),
        out_attn1=tuple(len(self_attentions(blk)) for blk in outputs),
        attn_levels=frozenset(
            lvl for blk, lvl in zip(inputs, in_levels) if child(blk, "SpatialTransformer") is not None
        ),
        linear_proj=_linear(getattr(first_st, "proj_in", None)),
        in_channels=int(getattr(inputs[0][0], "in_channels", 4)),
        conv_downs=conv_downs,
    )


# -- the rules, shared by both backends ----------------------------------------------------------


def _family(n_levels: int, attn_levels: set[int], linear_proj: bool) -> str:
    if n_levels == 4 and attn_levels == {0, 1, 2}:
        return "sd2" if linear_proj else "sd1"
    if n_levels == 3 and attn_levels == {1, 2}:
        return "sdxl"
    if n_levels == 4 and attn_levels == {1, 2}:
        raise UnsupportedUNet(
            "SDXL refiner layout (no attention at the top level): HiDiffusion has no rules for it"
        )
    raise UnsupportedUNet(
        f"unknown UNet layout ({n_levels} resolution levels, attention at levels {sorted(attn_levels)}): "
        "HiDiffusion supports SD 1.x/2.x and SDXL-style UNets"
    )


def layout_from(sk: Skeleton) -> UNetLayout:
    """Apply HiDiffusion's placement rules to a skeleton; raise UnsupportedUNet where they don't fit."""
    n = len(sk.in_levels)
    if len(sk.out_levels) != n or n < 4:
        raise UnsupportedUNet(
            f"UNet with {n} input and {len(sk.out_levels)} output blocks is not a supported layout"
        )
    n_levels = sk.in_levels[-1] + 1
    family = _family(n_levels, set(sk.attn_levels), sk.linear_proj)
    fmap = FAMILY_MAPS[family]

    downs, ups = sk.downs, sk.ups
    if len(downs) != n_levels - 1 or len(ups) != n_levels - 1:
        raise UnsupportedUNet("UNet's Downsample/Upsample blocks do not mirror each other")
    per_level = [
        sum(1 for i, lvl in enumerate(sk.in_levels) if lvl == k and i not in downs and i > 0)
        for k in range(n_levels)
    ]
    if len(set(per_level)) != 1:
        raise UnsupportedUNet(f"UNet with uneven blocks per level {per_level} is not a supported layout")

    rad_input = downs[fmap.rad_level]
    rau_output = n - 1 - rad_input
    if rau_output not in ups:
        raise UnsupportedUNet(
            f"output block {rau_output} mirroring the Downsample at input {rad_input} has no Upsample"
        )
    if rad_input not in sk.conv_downs:
        raise UnsupportedUNet(
            "Downsample without a 2D conv (avg-pool or 1D/3D variant): RAU-Net needs the conv"
        )
    ca_input = 1 + fmap.ca_level * (per_level[0] + 1)
    if sk.in_levels[ca_input] != fmap.ca_level or ca_input in downs:
        raise UnsupportedUNet("UNet's blocks per level do not match HiDiffusion's CA placement")

    # The Upsample in output block j produces the tensor concatenated with input block n-2-j's output.
    upsamples = tuple((j, n - 2 - j) for j in ups)
    msw = tuple(
        [("input", i) for i, lvl in enumerate(sk.in_levels) if lvl == fmap.msw_level and sk.in_attn1[i]]
        + [("output", j) for j, lvl in enumerate(sk.out_levels) if lvl == fmap.msw_level and sk.out_attn1[j]]
    )
    n_attn1 = sum((sk.in_attn1 if side == "input" else sk.out_attn1)[i] for side, i in msw)
    return UNetLayout(
        family=family,
        native=(fmap.native, fmap.native),
        n_blocks=n,
        rad_input=rad_input,
        rau_output=rau_output,
        ca_input=ca_input,
        ca_output=n - 1 - ca_input,
        upsamples=upsamples,
        msw_blocks=msw,
        n_attn1=n_attn1,
        in_channels=sk.in_channels,
        backend=sk.backend,
    )


def inspect_unet(unet: nn.Module) -> UNetLayout:
    """Read the HiDiffusion targets from an ldm/sgm ``UNetModel`` or a diffusers ``UNet2DConditionModel``.

    Raises UnsupportedUNet (one line) where they don't exist.
    """
    if is_ldm_unet(unet):
        return layout_from(_ldm_skeleton(unet))
    from . import layout_diffusers  # diffusers itself is never imported: classes are known by name

    if layout_diffusers.is_diffusers_unet(unet):
        return layout_from(layout_diffusers.skeleton(unet))
    raise UnsupportedUNet(
        "not a supported UNet (no input_blocks/middle_block/output_blocks of an ldm/sgm UNetModel, "
        "no conv_in/down_blocks/up_blocks of a diffusers UNet2DConditionModel); "
        "HiDiffusion needs SD 1.x/2.x or SDXL UNets"
    )
