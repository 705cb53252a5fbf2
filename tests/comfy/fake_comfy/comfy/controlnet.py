"""comfy/controlnet.py (a125cd84:155-230), reduced: a ControlNet whose ``get_control`` returns the
residual dict ``{"input": [], "middle": [1], "output": [one per skip]}`` at the sizes the vanilla
UNet's maps have (cldm.py:412-432), merged with a previous ControlNet's (control_merge)."""

from __future__ import annotations

import torch


class FakeControlNet:
    """Deterministic residuals (no weights): what matters is their sizes and where they go."""

    def __init__(
        self, channels: list[int], down: list[int], mid_channels: int, strength: float = 1.0, seed: int = 0
    ):
        self.channels, self.down, self.mid_channels = channels, down, mid_channels
        self.strength, self.seed = strength, seed
        self.previous_controlnet = None
        self.calls = 0

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        self.calls += 1
        gen = torch.Generator().manual_seed(self.seed)
        b, _, h, w = x_noisy.shape
        out = []
        for ch, d in zip(self.channels, self.down):
            out.append(torch.randn(b, ch, -(-h // d), -(-w // d), generator=gen) * self.strength)
        d = self.down[-1]
        middle = [torch.randn(b, self.mid_channels, -(-h // d), -(-w // d), generator=gen) * self.strength]
        return {"input": [], "middle": middle, "output": out}

    def pre_run(self, model, percent_to_timestep_function):
        pass

    def cleanup(self):
        pass

    def get_models(self):
        return []
