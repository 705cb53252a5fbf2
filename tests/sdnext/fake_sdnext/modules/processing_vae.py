"""SD.Next's VAE decode (modules/processing_vae.py@058a7f0c), reduced: latents -> images in [0, 1]."""

from __future__ import annotations

from typing import Any

import torch


def vae_decode(
    latents: torch.Tensor, model: Any, output_type: str = "np", **kwargs: Any
) -> list[torch.Tensor]:
    with torch.no_grad():
        decoded = model.vae.decode(latents / model.vae.config.scaling_factor).sample
    return list(((decoded + 1) / 2).clamp(0, 1))


def vae_encode(image: torch.Tensor, model: Any, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        return model.vae.encode(image * 2 - 1).latent_dist.mean * model.vae.config.scaling_factor
