"""backend.nn.cnets.t2i_adapter: a T2I-Adapter (dfdcbab t2i_adapter.py:120-156), tiny.

Called on the hint image, it returns one entry per input block of an SD 1.x UNet: per resolution
level ``[None, None, feature]`` (the feature added after the level's last non-downsampling block),
at the latent sizes of the hint's 1/8 resolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Adapter(nn.Module):
    def __init__(self, channels=(32, 64, 128, 128), cin: int = 3 * 64, seed: int = 0):
        super().__init__()
        self.unshuffle_amount = 8
        self.input_channels = cin // 64
        self.xl = False
        self.conv_in = nn.Conv2d(cin, channels[0], 3, padding=1)
        self.body = nn.ModuleList(
            nn.Conv2d(channels[max(i - 1, 0)], c, 3, padding=1, stride=1 if i == 0 else 2)
            for i, c in enumerate(channels)
        )
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

    def forward(self, x):
        x = self.conv_in(F.pixel_unshuffle(x, self.unshuffle_amount))
        features = []
        for conv in self.body:
            x = conv(x)
            features += [None, None, x]
        return features
