"""backend.nn.cnets.cldm: Forge's ControlNet model (dfdcbab cldm.py:244-270), tiny.

``forward(x, hint, timesteps, context, y)`` runs a copy of the UNet's input blocks and middle block
on the noisy latent, adds the guided hint after the first block, and returns one zero-conv output
per input block followed by the middle block's -- all at the full latent sizes of ``x``.
:meth:`ControlNet.from_unet` builds one from a (fake) Forge UNet with random weights, zero convs
included, so the residuals are not zero.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from ldm.modules.diffusionmodules.util import timestep_embedding


class ControlNet(nn.Module):
    def __init__(self, unet: nn.Module, hint_channels: int = 3, seed: int = 0):
        super().__init__()
        self.model_channels = unet.model_channels
        self.num_classes = unet.num_classes
        self.time_embed = copy.deepcopy(unet.time_embed)
        self.label_emb = copy.deepcopy(getattr(unet, "label_emb", None))
        self.input_blocks = copy.deepcopy(unet.input_blocks)
        self.middle_block = copy.deepcopy(unet.middle_block)
        in_ch = unet.input_blocks[0][0].in_channels
        if in_ch != 4:  # inpainting UNets: the ControlNet sees the 4-channel noisy latent only
            first = self.input_blocks[0][0]
            conv = nn.Conv2d(4, first.out_channels, 3, padding=1)
            self.input_blocks[0][0] = conv
        channels = self._channels()
        mc = self.model_channels
        self.input_hint_block = nn.Sequential(  # 8x image -> latent size, model_channels
            nn.Conv2d(hint_channels, 16, 3, padding=1, stride=2),
            nn.SiLU(),
            nn.Conv2d(16, 16, 3, padding=1, stride=2),
            nn.SiLU(),
            nn.Conv2d(16, mc, 3, padding=1, stride=2),
        )
        self.zero_convs = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels[:-1])
        self.middle_block_out = nn.Conv2d(channels[-1], channels[-1], 1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in (self.input_hint_block, self.zero_convs, self.middle_block_out):
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.middle_block_out.weight.dtype

    @torch.no_grad()
    def _channels(self) -> list[int]:
        """Channels of every input block's output and of the middle block's (a dry run)."""
        x = torch.zeros(1, 4, 16, 16)
        emb = self.time_embed(timestep_embedding(torch.zeros(1), self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(torch.zeros(1, self.label_emb[0][0].in_features))
        ctx = torch.zeros(1, 1, self._context_dim())
        out = []
        for block in self.input_blocks:
            x = block(x, emb, ctx)
            out.append(x.shape[1])
        out.append(self.middle_block(x, emb, ctx).shape[1])
        return out

    def _context_dim(self) -> int:
        block = next(m for m in self.modules() if type(m).__name__ == "BasicTransformerBlock")
        return block.attn2.to_k.in_features

    def forward(self, x, hint, timesteps, context, y=None, **kwargs):
        emb = self.time_embed(
            timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(x.dtype)
        )
        guided_hint = self.input_hint_block(hint)
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        outs = []
        h = x
        for module, zero_conv in zip(self.input_blocks, self.zero_convs):
            h = module(h, emb, context)
            if guided_hint is not None:
                h = h + guided_hint
                guided_hint = None
            outs.append(zero_conv(h))
        h = self.middle_block(h, emb, context)
        outs.append(self.middle_block_out(h))
        return outs
