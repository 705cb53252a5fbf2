# ruff: noqa: B006  (ComfyUI's signatures: transformer_options={} and model_options={} defaults)
"""comfy/model_base.py (a125cd84:123-200): BaseModel.apply_model (APPLY_MODEL wrappers) -> _apply_model,
which scales the input, converts sigma to the timestep and calls the diffusion model."""

from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.patcher_extension


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model: torch.nn.Module, model_sampling=None, scale_factor: float = 0.18215):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling or comfy.model_sampling.ModelSamplingDiscreteEPS()
        self.scale_factor = scale_factor
        self.current_patcher = None

    def apply_model(
        self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs
    ):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._apply_model,
            self,
            comfy.patcher_extension.get_all_wrappers(
                comfy.patcher_extension.WrappersMP.APPLY_MODEL, transformer_options
            ),
        ).execute(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def _apply_model(
        self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs
    ):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc)], dim=1)
        t = self.model_sampling.timestep(t).float()
        out = self.diffusion_model(
            xc, t, context=c_crossattn, control=control, transformer_options=transformer_options, **kwargs
        ).float()
        return self.model_sampling.calculate_denoised(sigma, out, x)

    def process_latent_in(self, latent):
        return latent * self.scale_factor

    def process_latent_out(self, latent):
        return latent / self.scale_factor
