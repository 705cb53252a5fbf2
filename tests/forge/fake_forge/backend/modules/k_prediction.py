"""backend.modules.k_prediction: the SD noise schedule as Forge's predictor (dfdcbab :68-110).

sigma <-> t and the eps parameterisation, computed as k-diffusion's CompVisDenoiser does in the
A1111 path (continuous t by log-sigma interpolation), so both hosts feed the UNet the same numbers.
"""

from __future__ import annotations

import k_diffusion.external
import torch


def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class Prediction(torch.nn.Module):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon"):
        super().__init__()
        self.sigma_data = sigma_data
        self.prediction_type = prediction_type
        acp = sd_alphas_cumprod()
        self.schedule = k_diffusion.external.DiscreteSchedule(((1 - acp) / acp) ** 0.5, quantize=False)

    @property
    def sigmas(self):
        return self.schedule.sigmas

    def sigma_min(self):
        return self.sigmas[0]

    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return self.schedule.sigma_to_t(sigma)

    def sigma(self, timestep):
        return self.schedule.t_to_sigma(timestep)

    def percent_to_sigma(self, percent):
        return self.sigma(torch.tensor((1.0 - percent) * 999.0))

    def calculate_input(self, sigma, noise):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return noise * sigma + latent_image
