# ruff: noqa: B006  (ComfyUI's signatures: transformer_options={} and model_options={} defaults)
"""comfy/ldm/modules/diffusionmodules/openaimodel.py (a125cd84) over the real ldm modules.

What the node pack meets, with ComfyUI's call structure:

* ``forward_timestep_embed`` (:33-60) runs a block's *layers*; ``UNetModel._forward`` hands it each
  ``TimestepEmbedSequential`` (:870-908) -- the blocks themselves are never called;
* ``Upsample.forward(x, output_shape)`` (:89-104) interpolates to the skip's shape;
* ``apply_control`` (:365-373) pops ``control[name]`` and adds it in place, logging a warning when
  the shapes do not fit; ``APPLIED`` records what was added (instrumentation for the tests);
* ``UNetModel.forward`` (:830-835) runs the DIFFUSION_MODEL wrappers around ``_forward``.

:func:`from_ldm` makes this UNet from a zoo-built ldm UNet with the same weights (convs and linears
become comfy.ops ``manual_cast`` layers, which cast their weights on every call).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from ldm.modules import attention as ldm_attention
from ldm.modules.diffusionmodules import openaimodel as ldm_unet
from ldm.modules.diffusionmodules.util import timestep_embedding

import comfy.ops
import comfy.patcher_extension

from ..attention import BasicTransformerBlock, CrossAttention, SpatialTransformer

TimestepBlock = ldm_unet.TimestepBlock
APPLIED: list[tuple[str, tuple, torch.Tensor]] = []  # (name, map shape, residual) of every add


def forward_timestep_embed(ts, x, emb, context=None, transformer_options={}, output_shape=None, **kwargs):
    for layer in ts:
        if isinstance(layer, TimestepBlock):
            x = layer(x, emb)
        elif isinstance(layer, SpatialTransformer):
            x = layer(x, context, transformer_options)
            if "transformer_index" in transformer_options:
                transformer_options["transformer_index"] += 1
        elif isinstance(layer, Upsample):
            x = layer(x, output_shape=output_shape)
        else:
            x = layer(x)
    return x


class TimestepEmbedSequential(ldm_unet.TimestepEmbedSequential):
    def forward(self, *args, **kwargs):
        return forward_timestep_embed(self, *args, **kwargs)


class Upsample(ldm_unet.Upsample):
    def forward(self, x, output_shape=None):
        shape = [x.shape[2] * 2, x.shape[3] * 2]
        if output_shape is not None:
            shape = [output_shape[2], output_shape[3]]
        x = F.interpolate(x, size=shape, mode="nearest")
        return self.conv(x) if self.use_conv else x


def apply_control(h, control, name):
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            try:
                h += ctrl
                APPLIED.append((name, tuple(h.shape), ctrl))
            except Exception:
                logging.warning(f"warning control could not be applied {h.shape} {ctrl.shape}")
    return h


class UNetModel(ldm_unet.UNetModel):
    def forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs
    ):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward,
            self,
            comfy.patcher_extension.get_all_wrappers(
                comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, transformer_options
            ),
        ).execute(x, timesteps, context, y, control, transformer_options, **kwargs)

    def _forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs
    ):
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})
        hs = []
        emb = self.time_embed(
            timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(x.dtype)
        )
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h = x
        for i, module in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", i)
            h = forward_timestep_embed(module, h, emb, context, transformer_options)
            h = apply_control(h, control, "input")
            for p in patches.get("input_block_patch", []):
                h = p(h, transformer_options)
            hs.append(h)
            for p in patches.get("input_block_patch_after_skip", []):
                h = p(h, transformer_options)
        transformer_options["block"] = ("middle", 0)
        h = forward_timestep_embed(self.middle_block, h, emb, context, transformer_options)
        h = apply_control(h, control, "middle")
        for i, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", i)
            hsp = apply_control(hs.pop(), control, "output")
            for p in patches.get("output_block_patch", []):
                h, hsp = p(h, hsp, transformer_options)
            h = torch.cat([h, hsp], dim=1)
            del hsp
            output_shape = hs[-1].shape if hs else None
            h = forward_timestep_embed(module, h, emb, context, transformer_options, output_shape)
        h = h.type(x.dtype)
        return self.out(h)


_CLASSES = {
    ldm_unet.UNetModel: UNetModel,
    ldm_unet.TimestepEmbedSequential: TimestepEmbedSequential,
    ldm_unet.Upsample: Upsample,
    ldm_attention.SpatialTransformer: SpatialTransformer,
    ldm_attention.BasicTransformerBlock: BasicTransformerBlock,
    ldm_attention.CrossAttention: CrossAttention,
    torch.nn.Conv2d: comfy.ops.manual_cast.Conv2d,  # ComfyUI's per-call casting layers
    torch.nn.Linear: comfy.ops.manual_cast.Linear,
}


def from_ldm(unet: torch.nn.Module) -> UNetModel:
    """A ComfyUI-layout copy of an ldm ``UNetModel`` holding the same weights."""
    comfy_unet = copy.deepcopy(unet)
    for module in comfy_unet.modules():
        cls = _CLASSES.get(type(module))
        if cls is not None:
            module.__class__ = cls
    return comfy_unet
