"""Helpers for the UNet tests: tiny real ldm and diffusers UNets (SD1.5 / SD2 / SDXL block layouts)."""

import torch

from lib_hidiff import zoo


def tiny(family: str, **kw) -> torch.nn.Module:
    kw.setdefault("heads", 2)
    kw.setdefault("context_dim", 32)
    kw.setdefault("attn_std", 0.3)
    if family == "sdxl":
        kw.setdefault("depths", (0, 2, 2))
    return zoo.build_ldm_unet(family, 32, **kw)


def tiny_diffusers(family: str, **kw) -> torch.nn.Module:
    """A diffusers UNet2DConditionModel with the same shape parameters as :func:`tiny`."""
    kw.setdefault("heads", 2)
    kw.setdefault("context_dim", 32)
    kw.setdefault("attn_std", 0.3)
    if family == "sdxl":
        kw.setdefault("depths", (0, 2, 2))
    return zoo.build_diffusers_unet(family, 32, **kw)


def in_channels(unet) -> int:
    return unet.conv_in.in_channels if hasattr(unet, "conv_in") else unet.input_blocks[0][0].in_channels


def inputs(unet, h: int, w: int, batch: int = 1, seed: int = 0):
    """(x, t, context) for one UNet call; context in the form ldm needs for this UNet's depth."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels(unet), h, w, generator=g)
    t = torch.full((batch,), 500.0)
    c = torch.randn(batch, 7, 32, generator=g)
    return x, t, c


def call(unet, x, t, c, **kw):
    """One UNet call in its backend's convention (ldm: context=..., diffusers: encoder_hidden_states=...)."""
    with torch.no_grad():
        if hasattr(unet, "conv_in"):
            return unet(x, t, encoder_hidden_states=c, **kw).sample
        return unet(x, t, context=zoo.ldm_context(unet, c), **kw)


def cast_unet(unet, dtype):
    """Run an ldm UNet in another dtype, as the WebUI's timestep-embedding hijack allows."""
    unet = unet.to(dtype)
    for m in unet.modules():
        if type(m).__name__ == "GroupNorm32":  # ldm's GroupNorm32 computes in float32 by design
            m.float()
    unet.dtype = dtype  # ldm casts the input with this
    unet.time_embed.register_forward_pre_hook(lambda m, a: (a[0].to(dtype),))
    return unet


def traces(unet: torch.nn.Module) -> list[str]:
    """Every hook or instance attribute a patch could have left behind."""
    left = []
    for name, m in unet.named_modules():
        for kind in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs",
        ):
            if getattr(m, kind, None):
                left.append(f"{name}.{kind}")
        if "forward" in m.__dict__:
            left.append(f"{name}.forward")
    return left
