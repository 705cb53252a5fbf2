"""The k-diffusion side of the equivalence tests: the same UNet as a guided VE denoiser.

`GuidedUNet(x, sigma)` returns D_u + λ (D_c − D_u) and leaves D_u in `last_denoised_uncond`, the
contract of lib_hidiff.cfgpp. The UNet gets exactly what the diffusers pipeline gives it at that
noise level: the VE sample scaled by 1/√(σ² + 1) (= the VP sample) and the scheduler's timestep
for that sigma.
"""

from __future__ import annotations

import torch


class GuidedUNet:
    def __init__(self, unet, cond, uncond, sigmas, timesteps, lam: float, prediction_type: str = "epsilon"):
        self.unet = unet
        self.context = torch.cat([uncond, cond])
        self.table = {float(s): t for s, t in zip(sigmas, timesteps)}
        self.lam = lam
        self.prediction_type = prediction_type
        self.last_denoised_uncond = None
        self.calls: list[float] = []

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        s = sigma[0].to(torch.float32)
        t = self.table[float(s)]
        self.calls.append(float(s))
        x_in = x / ((s**2 + 1) ** 0.5)
        out = self.unet(torch.cat([x_in] * 2), t, encoder_hidden_states=self.context).sample
        e_u, e_c = out.chunk(2)
        if self.prediction_type == "epsilon":
            d_u, d_c = x - s * e_u, x - s * e_c
        elif self.prediction_type == "v_prediction":
            c_out, c_skip = -s / (s**2 + 1) ** 0.5, 1 / (s**2 + 1)
            d_u, d_c = c_skip * x + c_out * e_u, c_skip * x + c_out * e_c
        elif self.prediction_type == "sample":
            d_u, d_c = e_u, e_c
        else:
            raise ValueError(self.prediction_type)
        self.last_denoised_uncond = d_u
        return d_u + self.lam * (d_c - d_u)


def ddim_grid(scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """(VE sigmas incl. the final one, timesteps) of a DDIMScheduler after set_timesteps."""
    ac = scheduler.alphas_cumprod
    ts = scheduler.timesteps
    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    final = ts[-1] - step
    a = [ac[t] for t in ts] + [ac[final] if final >= 0 else scheduler.final_alpha_cumprod]
    a = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in a])
    return ((1 - a) / a) ** 0.5, ts
