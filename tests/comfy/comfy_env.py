# ruff: noqa: B006  (ComfyUI's signatures: transformer_options={} and model_options={} defaults)
"""Models and helpers for the ComfyUI tests: the zoo's ldm UNet in ComfyUI's layout (same weights),
a probe UNet that records HiDiffusion's state per call, and a closed-form denoiser."""

from __future__ import annotations

import torch
import torch.nn as nn
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel, from_ldm
from comfy.model_base import BaseModel
from comfy.model_patcher import ModelPatcher

import lib_hidiff.unet as hd
from lib_hidiff import zoo
from lib_hidiff.comfy import hidiffusion


def ldm_sd15_unet(seed: int = 0) -> nn.Module:
    """The zoo's real ldm UNet, SD 1.5 block layout, 32 channels (what the A1111 tests run)."""
    return zoo.build_ldm_unet("sd1", 32, heads=4, context_dim=32, seed=seed)


def comfy_model(unet: nn.Module) -> ModelPatcher:
    """A MODEL (ModelPatcher around a BaseModel) holding ``unet`` as its diffusion model."""
    return ModelPatcher(BaseModel(unet))


def conditioning(seed: int, tokens: int = 4, dim: int = 32, scale: float = 1.0) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=gen) * scale, {}]]


def latent(h: int, w: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(1, 4, h, w, generator=gen)}


def hook_count(module: nn.Module) -> int:
    """Forward (pre-)hooks and instance forward overrides anywhere in the module tree."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + ("forward" in m.__dict__)
        for m in module.modules()
    )


def nothing_left(unet: nn.Module) -> bool:
    return hook_count(unet) == 0 and hd.installed(unet) is None and unet not in hidiffusion._RUNS


class ProbeUNet(UNetModel):
    """A real UNet in ComfyUI's layout whose forward does not run the blocks: it records whether
    HiDiffusion's gate was open and its clock, and predicts eps = 0 (x0 = x)."""

    def _forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs
    ):
        inst = hd.installed(self)
        session = inst.session if inst is not None else None
        self.calls.append(
            {
                "open": session is not None,
                "clock": session.progress() if session is not None else None,
                "rows": x.shape[0],
                "sigma": float(transformer_options["sigmas"][0]),
                "cond_or_uncond": list(transformer_options.get("cond_or_uncond", [])),
            }
        )
        return torch.zeros_like(x[:, :4])


def probe_unet() -> ProbeUNet:
    unet = from_ldm(ldm_sd15_unet())
    unet.__class__ = ProbeUNet
    unet.calls = []
    return unet.eval()


class ClosedFormUNet(nn.Module):
    """An eps model whose x0 is known: data ~ N(m, 1) with m the mean of the row's text cond, so
    D(x, σ) = (x + σ² m) / (1 + σ²); ComfyUI's EPS wrapper hands it x / √(1 + σ²)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs
    ):
        self.calls += 1
        sigma = transformer_options["sigmas"]
        sigma = torch.cat([sigma] * (x.shape[0] // sigma.shape[0])).view(-1, 1, 1, 1).to(x)
        xv = x * (1 + sigma**2) ** 0.5
        m = context.mean(dim=(1, 2)).view(-1, 1, 1, 1).to(x)
        d = (xv + sigma**2 * m) / (1 + sigma**2)
        return (xv - d) / sigma


class HybridUNet(UNetModel):
    """A real UNet in ComfyUI's layout whose prediction is the closed-form eps of ClosedFormUNet plus
    ``scale`` times its own blocks' output: the closed-form part makes sampling and inversion
    well-posed (the round trip converges), the UNet part carries HiDiffusion's effect (RAU-Net,
    MSW-MSA window shifts) into every prediction."""

    scale = 0.02

    def _forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs
    ):
        blocks = super()._forward(x, timesteps, context, y, control, transformer_options, **kwargs)
        sigma = transformer_options["sigmas"]
        sigma = torch.cat([sigma] * (x.shape[0] // sigma.shape[0])).view(-1, 1, 1, 1).to(x)
        xv = x * (1 + sigma**2) ** 0.5
        m = context.mean(dim=(1, 2)).view(-1, 1, 1, 1).to(x)
        d = (xv + sigma**2 * m) / (1 + sigma**2)
        return (xv - d) / sigma + self.scale * blocks


def hybrid_unet() -> HybridUNet:
    unet = from_ldm(ldm_sd15_unet())
    unet.__class__ = HybridUNet
    return unet.eval()
