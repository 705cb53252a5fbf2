"""Where HiDiffusion's patches sit in ComfyUI's UNet.

ComfyUI's ``UNetModel._forward`` never calls its blocks: it hands each ``TimestepEmbedSequential``
to ``forward_timestep_embed``, which calls the block's *layers* one by one
(comfy/ldm/modules/diffusionmodules/openaimodel.py:33-60 and :870-908 at a125cd84). A hook on a
block would never fire, so the patches that the core puts on whole blocks go on the layer that
produces the block's output instead: the latent enters at the first layer of ``input_blocks[0]``
(its conv), and a block's output is its last layer's. Everything else (the RAD Downsample, the
Upsamples, the SpatialTransformers and their attn1) is a layer already and stays where the core
puts it.
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn

from lib_hidiff.unet.layout import UNetLayout
from lib_hidiff.unet.targets import UNetTargets, ldm_targets

__all__ = ["block_output", "comfy_targets"]


def block_output(block: nn.Module) -> nn.Module:
    """The layer whose output is the block's output (the block itself if it has no layers)."""
    layers = list(block.children())
    return layers[-1] if layers else block


def comfy_targets(unet: nn.Module, layout: UNetLayout) -> UNetTargets:
    """The core's ldm targets, with block-level hooks moved onto the layers ComfyUI calls."""
    inputs, outputs = unet.input_blocks, unet.output_blocks
    first = list(inputs[0].children())
    base = ldm_targets(unet, layout)
    changes: dict = {
        "entry": first[0] if first else inputs[0],
        "skips": {i: block_output(block) for i, block in enumerate(inputs)},
        "ca_output": block_output(outputs[layout.ca_output]),
    }
    # ControlNet residuals are fitted by this package's own hooks (.control), on the layers; a core
    # that fits ``control`` dicts on whole blocks would never see them here, so it is left out.
    if any(f.name == "control" for f in dataclasses.fields(base)):
        changes["control"] = None
    return dataclasses.replace(base, **changes)
