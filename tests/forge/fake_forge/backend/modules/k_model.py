"""backend.modules.k_model: KModel -- the UNet (``diffusion_model``) plus its predictor (dfdcbab :7-46).

``apply_model`` takes sigma as ``t``, scales the input, calls
``diffusion_model(xc, timestep, context=..., control=..., transformer_options=...)`` and returns x0.
"""

from __future__ import annotations

import torch


class KModel(torch.nn.Module):
    def __init__(self, model, predictor):
        super().__init__()
        self.diffusion_model = model
        self.predictor = predictor
        self.computation_dtype = torch.float32

    def apply_model(
        self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs
    ):
        transformer_options = {} if transformer_options is None else transformer_options
        sigma = t
        xc = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        out = self.diffusion_model(
            xc,
            self.predictor.timestep(sigma).float(),
            context=c_crossattn,
            control=control,
            transformer_options=transformer_options,
        ).float()
        return self.predictor.calculate_denoised(sigma, out, x)

    def memory_required(self, input_shape):
        return 0
