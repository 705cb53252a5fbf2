"""Find this step's unconditional prediction in a captured UNet batch, or say why it is not there.

diffusers pipelines run the UNet on `[uncond, cond]` and pass `ε_g = ε_u + w (ε_c − ε_u)` to the
scheduler. A captured batch belongs to the step only if it has 2·B rows for B guided rows, the same
timestep, and some w for which `ε_u + w (ε_c − ε_u)` reproduces `ε_g` to rounding. Anything else
(guidance off, PAG-style 3-way batches, guidance_rescale, another step's call) is refused with a
reason, and the scheduler takes its base step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .capture import Captured

__all__ = ["GuidedSplit", "split_guided"]

# Rounding allowance for the guided-prediction check, in units of the dtype's machine epsilon:
# ε_u + w (ε_c − ε_u) costs a few roundings per element; a foreign batch misses by O(1).
_EPS_UNITS = 4.0


@dataclass(frozen=True)
class GuidedSplit:
    """This step's predictions: unconditional, conditional, and the pipeline's guidance scale w."""

    uncond: torch.Tensor
    cond: torch.Tensor
    scale: float

    def guided(self, lam: float) -> torch.Tensor:
        """ε_λ = ε_u + λ (ε_c − ε_u), in the predictions' dtype."""
        return self.uncond + lam * (self.cond - self.uncond)


def _timestep_values(timestep: Any) -> torch.Tensor | None:
    if timestep is None:
        return None
    try:
        return torch.as_tensor(timestep).detach().to(device="cpu", dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        return None


def _same_timestep(captured: Any, stepped: Any) -> bool:
    a, b = _timestep_values(captured), _timestep_values(stepped)
    if a is None or b is None:
        return True  # nothing to compare; the guided check below still applies
    if a.numel() == 0 or b.numel() == 0:
        return False
    return bool(((a - b.mean()).abs() <= 1e-4 * b.abs().max().clamp(min=1.0)).all())


def split_guided(captured: Captured | None, guided: torch.Tensor, timestep: Any) -> GuidedSplit | str:
    """The `[uncond, cond]` halves of `captured` if they produced `guided`; else a one-line reason."""
    if captured is None:
        return "no UNet call was captured for this step (is the capture hook on pipe.unet?)"
    out = captured.output
    rows = guided.shape[0]
    if out.shape[1:] != guided.shape[1:]:
        return f"the UNet output {tuple(out.shape)} does not match the prediction {tuple(guided.shape)}"
    if out.shape[0] == rows:
        return (
            "the pipeline ran no unconditional pass (diffusers skips it when guidance_scale <= 1; "
            "give the pipeline any guidance_scale > 1, λ is the CFG++ scale)"
        )
    if out.shape[0] != 2 * rows:
        return (
            f"the UNet batch has {out.shape[0]} rows for {rows} guided rows, not [uncond, cond] "
            "(e.g. a PAG-style 3-way batch)"
        )
    if not _same_timestep(captured.timestep, timestep):
        return "the captured UNet call is for another timestep than this step"
    uncond, cond = out.chunk(2)
    # The fit runs in float64 (MPS has none: float32 there, with a looser allowance).
    work = torch.float32 if out.device.type == "mps" else torch.float64
    u, c, g = uncond.to(work), cond.to(work), guided.to(work)
    d, r = c - u, g - u
    dd = float((d * d).sum())
    w = float((r * d).sum()) / dd if dd > 0 else 0.0
    miss = float((r - w * d).norm())
    eps = max(torch.finfo(out.dtype).eps, torch.finfo(guided.dtype).eps, 4 * torch.finfo(work).eps)
    size = float(u.norm()) + abs(w) * float(d.norm())
    if not miss <= _EPS_UNITS * eps * max(size, 1e-30):
        return (
            "the guided prediction is not ε_u + w (ε_c − ε_u) of the captured batch "
            "(guidance_rescale, or another extension changed the guidance)"
        )
    dtype = guided.dtype
    return GuidedSplit(uncond.to(dtype), cond.to(dtype), w)
