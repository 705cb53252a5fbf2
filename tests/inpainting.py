"""What the inpainting tests of every host share: 9-channel UNets, the picture, the mask, the checks.

Each host's fake runs its own img2img-inpaint path (A1111 and Forge blend the latent with the mask
in the CFG denoiser and after sampling; SD.Next runs diffusers' inpaint pipeline and pastes the
original back); these helpers only build the inputs and read what HiDiffusion did.
The sizes are above native so HiDiffusion runs: SDXL at 2x native (2048 px, its attention-free
top level keeps that cheap), SD 1.5 at 1.5x (768 px: at 1024 px its top-level attention alone takes
most of a minute on a loaded CPU).
"""

from __future__ import annotations

import torch

from lib_hidiff import zoo

# family -> (pixel side, zoo kwargs of a tiny 9-channel UNet)
CASES = {
    "sd1": (768, {"heads": 4}),
    "sdxl": (2048, {"heads": 2, "depths": (0, 1, 1)}),
}
# RAU-Net for the whole schedule: inpainting models run CA only (no RAD), as upstream does
SETTINGS = {"enabled": True, "t1": 1.0}


def ldm_unet(family: str, seed: int = 0) -> torch.nn.Module:
    """A real ldm UNet of the family's layout with 9 input channels (latent + mask + masked picture)."""
    return zoo.build_ldm_unet(family, 32, context_dim=32, in_channels=9, seed=seed, **CASES[family][1])


def latent_side(family: str) -> int:
    return CASES[family][0] // 8


def init_latent(family: str, seed: int = 11) -> torch.Tensor:
    side = latent_side(family)
    return torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(seed))


def latent_mask(family: str) -> torch.Tensor:
    """1 where the picture is repainted: the left half."""
    side = latent_side(family)
    mask = torch.zeros(1, 1, side, side)
    mask[..., : side // 2] = 1.0
    return mask


def check_inpainted(out: torch.Tensor, init: torch.Tensor, kept: torch.Tensor | None = None) -> None:
    """The masked (left) half changed; the rest is ``kept`` (the host's original there) exactly."""
    half = init.shape[-1] // 2
    kept = init if kept is None else kept
    assert torch.equal(out[..., half:], kept[..., half:])
    change = (out[..., :half] - init[..., :half]).norm() / init[..., :half].norm()
    assert change > 0.05, f"the masked area hardly changed ({float(change):.3g})"


class CAProbe:
    """Records the size of the map entering the block after the CA pool, and the UNet's input channels."""

    def __init__(self, unet: torch.nn.Module, after_ca: torch.nn.Module):
        self.in_channels: list[int] = []
        self.after_ca: list[tuple[int, int]] = []
        self._handles = [
            unet.register_forward_pre_hook(
                lambda m, args, kw: self.in_channels.append(args[0].shape[1]), with_kwargs=True
            ),
            after_ca.register_forward_pre_hook(
                lambda m, args: self.after_ca.append(tuple(args[0].shape[-2:]))
            ),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def check(self, family: str, calls: int) -> None:
        """Every call: 9 channels in, and the level-1 map halved by CA (ceil) after the pool."""
        level1 = -(-latent_side(family) // 2)
        assert self.in_channels == [9] * calls, self.in_channels
        assert self.after_ca == [(-(-level1 // 2),) * 2] * calls, self.after_ca
        assert self.after_ca == [(-(-level1 // 2),) * 2] * calls
