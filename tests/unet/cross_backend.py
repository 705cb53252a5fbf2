"""Cross-backend check: an ldm UNet and its diffusers twin give the same HiDiffusion output.

Run in-process by the tests, and as ``python -m tests.unet.cross_backend`` in a subprocess whose
``PYTHONPATH`` puts another diffusers release first (the newest one, where the official package
cannot import); it then prints one JSON line with the diffusers version and the measured differences.
Window shifts are drawn from the seed, so equal outputs also prove equal shift block numbering.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lib_hidiff as hd  # noqa: E402
from lib_hidiff import zoo  # noqa: E402

from .helpers import call, inputs, tiny  # noqa: E402

# (family, latent h x w, steps of 10 to run, extra tiny() arguments). Every RAU-Net phase is crossed:
# SD RAD/RAU for i < 4; SDXL aggressive RAD for i < int(10*8/50) = 1, CA for 1 <= i < 4; odd maps.
# The gate is lifted (it is not what differs between backends), so small latents do.
CASES: tuple[tuple[str, tuple[int, int], tuple[int, ...], dict], ...] = (
    ("sd1", (48, 40), (0, 6), {}),
    ("sd1", (45, 33), (0,), {}),
    ("sd2", (40, 48), (1,), {}),
    ("sdxl", (72, 66), (0, 2), {}),
    ("sdxl", (70, 62), (2,), {"in_channels": 9}),
)
QUICK = (("sd1", (48, 40), (0, 6), {}),)


def measure(cases=CASES, seed: int = 7) -> dict:
    """Largest differences between our HiDiffusion on ldm and on its diffusers twin over ``cases``."""
    import diffusers

    torch.manual_seed(0)
    worst_rel = worst_abs = 0.0
    rows = []
    with zoo.sdpa_attention():
        for family, hw, steps, kw in cases:
            ldm = tiny(family, **kw)
            twin = zoo.diffusers_twin(ldm, family)
            same = dataclasses.replace(hd.inspect_unet(ldm), backend="diffusers")
            assert hd.inspect_unet(twin) == same, "the two backends read different layouts"
            x, t, c = inputs(ldm, *hw, batch=2, seed=hw[0])
            for i in steps:
                out = {}
                for name, unet in (("ldm", ldm), ("diffusers", twin)):
                    with hd.apply_hidiffusion(
                        unet, hd.HiDiffusionSettings(gate=False), progress=lambda i=i: (i, 10), seed=seed
                    ):
                        out[name] = call(unet, x, t, c)
                diff = (out["ldm"] - out["diffusers"]).abs().max().item()
                rel = diff / out["ldm"].abs().max().item()
                worst_rel, worst_abs = max(worst_rel, rel), max(worst_abs, diff)
                rows.append({"family": family, "hw": list(hw), "step": i, "rel": rel, "abs": diff, **kw})
    return {
        "diffusers": diffusers.__version__,
        "diffusers_file": diffusers.__file__,
        "max_rel": worst_rel,
        "max_abs": worst_abs,
        "cases": rows,
    }


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(json.dumps(measure()))
