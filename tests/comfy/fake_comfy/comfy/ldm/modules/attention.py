# ruff: noqa: B006  (ComfyUI's signatures: transformer_options={} and model_options={} defaults)
"""comfy/ldm/modules/attention.py (a125cd84:675-928): CrossAttention, BasicTransformerBlock and
SpatialTransformer with ComfyUI's call signatures, as classes over the real ldm modules (same
parameters). attn1 is called ``attn1(n, context=None, value=None, transformer_options=...)`` unless
an attn1 replace patch takes over (:798-808)."""

from __future__ import annotations

import torch.nn.functional as F
from ldm.modules import attention as ldm_attention


class CrossAttention(ldm_attention.CrossAttention):
    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context if value is None else value)
        b, n, inner = q.shape
        h = self.heads
        q, k, v = (t.reshape(b, t.shape[1], h, inner // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # optimized_attention (pytorch)
        return self.to_out(out.transpose(1, 2).reshape(b, n, inner))


class BasicTransformerBlock(ldm_attention.BasicTransformerBlock):
    def forward(self, x, context=None, transformer_options={}):
        extra_options = {
            k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")
        }
        patches = transformer_options.get("patches", {})
        replace = transformer_options.get("patches_replace", {})
        block = transformer_options.get("block")
        block_index = transformer_options.get("block_index", 0)
        n = self.norm1(x)
        context_attn1 = context if self.disable_self_attn else None
        value_attn1 = None
        if "attn1_patch" in patches:
            if context_attn1 is None:
                context_attn1 = n
            value_attn1 = context_attn1
            for p in patches["attn1_patch"]:
                n, context_attn1, value_attn1 = p(n, context_attn1, value_attn1, extra_options)
        key = (block[0], block[1], block_index) if block is not None else None
        attn1_replace = replace.get("attn1", {})
        if key not in attn1_replace:
            key = block
        if key in attn1_replace:
            if context_attn1 is None:
                context_attn1 = value_attn1 = n
            n = attn1_replace[key](
                self.attn1.to_q(n),
                self.attn1.to_k(context_attn1),
                self.attn1.to_v(value_attn1),
                extra_options,
            )
            n = self.attn1.to_out(n)
        else:
            n = self.attn1(
                n, context=context_attn1, value=value_attn1, transformer_options=transformer_options
            )
        x = n + x
        n = self.attn2(self.norm2(x), context=context, value=None, transformer_options=transformer_options)
        x = n + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(ldm_attention.SpatialTransformer):
    def forward(self, x, context=None, transformer_options={}):
        if not isinstance(context, list):
            context = [context] * len(self.transformer_blocks)
        b, c, h, w = x.shape
        transformer_options["activations_shape"] = list(x.shape)
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.movedim(1, 3).flatten(1, 2).contiguous()
        if self.use_linear:
            x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            x = block(x, context=context[i], transformer_options=transformer_options)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.reshape(x.shape[0], h, w, x.shape[-1]).movedim(3, 1).contiguous()
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in
