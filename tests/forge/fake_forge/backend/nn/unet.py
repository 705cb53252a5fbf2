"""backend.nn.unet: Forge's ldm-like UNet, reduced to the calls the extension meets (dfdcbab unet.py).

The classes keep Forge's names and *call signatures* -- ``TimestepEmbedSequential`` hands
``transformer_options`` to every ResBlock/SpatialTransformer and ``output_shape=`` to every
Upsample, ``BasicTransformerBlock`` runs attn1 patches and calls
``attn1(n, context=..., value=..., transformer_options=...)``, the UNet loop runs input/output
block patches, adds the ``control`` dict's residuals with ``apply_control`` after every input block,
after the middle block and to every skip (unet.py:714, :730, :736) and concatenates skips with
``torch.cat`` -- on top of the real ldm modules
(stable-diffusion-sdkit), whose parameters and state_dict keys are Forge's too.

:func:`from_ldm` turns a zoo-built ldm UNet into this UNet *with the same weights* (a copy whose
modules get these classes; convs and linears become Forge's per-call-casting operations).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from einops import rearrange
from ldm.modules import attention as ldm_attention
from ldm.modules.diffusionmodules import openaimodel as ldm_unet
from ldm.modules.diffusionmodules.util import timestep_embedding

from backend.operations import ForgeOperations


def apply_control(h, control, name):
    """dfdcbab unet.py:44-52: pop the last entry and add it in place; a misfit is printed and dropped."""
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            try:
                h += ctrl
            except Exception:
                print("warning control could not be applied", h.shape, ctrl.shape)
    return h


class TimestepEmbedSequential(ldm_unet.TimestepEmbedSequential):
    def forward(self, x, emb, context=None, transformer_options=None, output_shape=None):
        for layer in self:
            if isinstance(layer, ldm_unet.TimestepBlock):
                x = layer(x, emb, transformer_options)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, transformer_options)
            elif isinstance(layer, Upsample):
                x = layer(x, output_shape=output_shape)
            else:
                x = layer(x)
        return x


class ResBlock(ldm_unet.ResBlock):
    def forward(self, x, emb, transformer_options=None):
        return self._forward(x, emb)


class Upsample(ldm_unet.Upsample):
    def forward(self, x, output_shape=None):
        size = (x.shape[2] * 2, x.shape[3] * 2) if output_shape is None else tuple(output_shape[2:4])
        x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(ldm_unet.Downsample):
    """Called ``layer(x)``; ``.op`` is the (Forge) conv."""


class CrossAttention(ldm_attention.CrossAttention):
    def forward(self, x, context=None, value=None, mask=None, transformer_options=None):
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context if value is None else value)
        b, n, inner = q.shape
        h = self.heads
        q, k, v = (t.reshape(b, t.shape[1], h, inner // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # Forge's attention_pytorch
        return self.to_out(out.transpose(1, 2).reshape(b, n, inner))


class BasicTransformerBlock(ldm_attention.BasicTransformerBlock):
    def forward(self, x, context=None, transformer_options=None):
        transformer_options = {} if transformer_options is None else transformer_options
        patches = transformer_options.get("patches", {})
        replace = transformer_options.get("patches_replace", {})
        extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"], extra["dim_head"] = (
            self.attn1.heads,
            self.attn1.to_q.out_features // self.attn1.heads,
        )
        n = self.norm1(x)
        context1 = context if self.disable_self_attn else None
        value1 = None
        if "attn1_patch" in patches:  # Forge hands the patch n as context and value
            context1 = n if context1 is None else context1
            value1 = context1
            for p in patches["attn1_patch"]:
                n, context1, value1 = p(n, context1, value1, extra)
        block = transformer_options.get("block")
        key = None if block is None else (block[0], block[1], transformer_options.get("block_index", 0))
        attn1_replace = replace.get("attn1", {})
        key = key if key in attn1_replace else block
        if key in attn1_replace:  # the module is not called: q/k/v/out around the replacement
            context1 = n if context1 is None else context1
            value1 = n if value1 is None else value1
            n = attn1_replace[key](
                self.attn1.to_q(n), self.attn1.to_k(context1), self.attn1.to_v(value1), extra
            )
            n = self.attn1.to_out(n)
        else:
            n = self.attn1(n, context=context1, value=value1, transformer_options=extra)
        for p in patches.get("attn1_output_patch", []):
            n = p(n, extra)
        x = x + n
        x = self.attn2(self.norm2(x), context=context, transformer_options=extra) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(ldm_attention.SpatialTransformer):
    def forward(self, x, context=None, transformer_options=None):
        transformer_options = {} if transformer_options is None else transformer_options
        if not isinstance(context, list):
            context = [context] * len(self.transformer_blocks)
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "b c h w -> b (h w) c").contiguous()
        if self.use_linear:
            x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            x = block(x, context=context[i], transformer_options=transformer_options)
        if self.use_linear:
            x = self.proj_out(x)
        x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w).contiguous()
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class IntegratedUNet2DConditionModel(ldm_unet.UNetModel):
    def forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options=None, **kwargs
    ):
        transformer_options = {} if transformer_options is None else transformer_options
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})
        emb = self.time_embed(
            timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(x.dtype)
        )
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs = []
        h = x
        for i, module in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", i)
            h = module(h, emb, context, transformer_options)
            h = apply_control(h, control, "input")
            for p in patches.get("input_block_patch", []):
                h = p(h, transformer_options)
            hs.append(h)
            for p in patches.get("input_block_patch_after_skip", []):
                h = p(h, transformer_options)
        transformer_options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, transformer_options)
        h = apply_control(h, control, "middle")
        for i, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", i)
            hsp = apply_control(hs.pop(), control, "output")
            for p in patches.get("output_block_patch", []):
                h, hsp = p(h, hsp, transformer_options)
            h = torch.cat([h, hsp], dim=1)
            output_shape = hs[-1].shape if hs else None
            h = module(h, emb, context, transformer_options, output_shape)
        return self.out(h).type(x.dtype)


_CLASSES = {
    ldm_unet.UNetModel: IntegratedUNet2DConditionModel,
    ldm_unet.TimestepEmbedSequential: TimestepEmbedSequential,
    ldm_unet.ResBlock: ResBlock,
    ldm_unet.Upsample: Upsample,
    ldm_unet.Downsample: Downsample,
    ldm_attention.SpatialTransformer: SpatialTransformer,
    ldm_attention.BasicTransformerBlock: BasicTransformerBlock,
    ldm_attention.CrossAttention: CrossAttention,
    torch.nn.Conv2d: ForgeOperations.Conv2d,
    torch.nn.Linear: ForgeOperations.Linear,
}


def from_ldm(unet: torch.nn.Module) -> IntegratedUNet2DConditionModel:
    """A Forge-layout copy of an ldm ``UNetModel`` holding the same weights."""
    forge = copy.deepcopy(unet)
    for module in forge.modules():
        cls = _CLASSES.get(type(module))
        if cls is not None:
            module.__class__ = cls
    return forge
