"""Helpers for the UNet tests: tiny real ldm UNets (SD1.5 / SD2 / SDXL block layouts)."""

import torch

from lib_hidiff import zoo


def tiny(family: str, **kw) -> torch.nn.Module:
    kw.setdefault("heads", 2)
    kw.setdefault("context_dim", 32)
    kw.setdefault("attn_std", 0.3)
    if family == "sdxl":
        kw.setdefault("depths", (0, 2, 2))
    return zoo.build_ldm_unet(family, 32, **kw)


def inputs(unet, h: int, w: int, batch: int = 1, seed: int = 0):
    """(x, t, context) for one UNet call; context in the form ldm needs for this UNet's depth."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, unet.input_blocks[0][0].in_channels, h, w, generator=g)
    t = torch.full((batch,), 500.0)
    c = torch.randn(batch, 7, 32, generator=g)
    return x, t, c


def call(unet, x, t, c):
    with torch.no_grad():
        return unet(x, t, context=zoo.ldm_context(unet, c))


def cast_unet(unet, dtype):
    """Run an ldm UNet in another dtype, as the WebUI's timestep-embedding hijack allows."""
    unet = unet.to(dtype)
    for m in unet.modules():
        if type(m).__name__ == "GroupNorm32":  # ldm's GroupNorm32 computes in float32 by design
            m.float()
    unet.dtype = dtype  # ldm casts the input with this
    unet.time_embed.register_forward_pre_hook(lambda m, a: (a[0].to(dtype),))
    return unet
