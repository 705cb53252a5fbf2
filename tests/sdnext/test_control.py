"""SD.Next's Control tab (058a7f0c): the extension is not there, and a Control generation is untouched.

The control runner keeps only the external scripts named in ``installer.control_extensions``
(scripts_manager.py:384-388; the fake's ``add_script`` mirrors it), so our script's ``process()``
never parses arguments for a Control generation, and ``/sdapi/v1/control`` drops
``alwayson_scripts`` (api/control.py:85). Our ``process_pre`` / ``process_post`` wrappers still see
the Control passes: this checks they leave them alone -- a diffusers ControlNet pipeline above the
native size runs with no patch on its UNet and gives what it gives with the extension unloaded.
"""

from __future__ import annotations

import torch
from modules import processing, scripts_manager, shared
from PIL import Image

import lib_hidiff.unet as hd
from lib_hidiff import zoo

from .sdnext_env import SDNext, hook_count, tiny_pipeline, tiny_unet


def _control_pipeline():
    from diffusers import StableDiffusionControlNetPipeline

    base = tiny_pipeline("tiny-sd15-control", unet=tiny_unet())
    net = zoo.build_controlnet(base.unet, hint_channels=(8, 8))  # hint at 2x the latent: the VAE's scale
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    pipe.sd_checkpoint_info, pipe.sd_model_hash = base.sd_checkpoint_info, base.sd_model_hash
    return pipe


def _control_generation(env: SDNext) -> tuple[torch.Tensor, list[int]]:
    pipe = env.load_model(_control_pipeline())
    runner = scripts_manager.scripts_control
    runner.initialize_scripts(is_img2img=False, is_control=True)
    runner.setup_ui(parent="control")
    p = processing.StableDiffusionProcessingControl(
        sd_model=pipe, prompt="a cat", width=136, height=136, steps=1, seed=1, sampler_name="Euler"
    )
    p.scripts, p.script_args = runner, [0] + [getattr(c, "value", None) for c in runner.inputs[1:]]
    p.task_args["image"] = [Image.new("RGB", (136, 136), (200, 40, 90))]
    hooks: list[int] = []
    spy = pipe.unet.register_forward_pre_hook(lambda m, a: hooks.append(hook_count(m) - 1))
    try:
        res = processing.process_images(p)
    finally:
        spy.remove()
    assert "HiDiffusion" not in [s.title() for s in runner.scripts]
    return res.images[0], hooks


def test_control_generation_is_untouched(sdnext):
    assert 136 // 2 > 64  # a 68x68 latent: above SD 1.5's native size, where HiDiffusion acts
    image, hooks = _control_generation(sdnext)
    assert hooks and set(hooks) == {0}  # no patch of ours on the UNet during any call
    assert hd.installed(shared.sd_model.unet) is None
    sdnext.stop()
    bare = SDNext(extensions=())
    bare.start()
    try:
        reference, _ = _control_generation(bare)
    finally:
        bare.stop()
        sdnext.start()
    assert torch.equal(image, reference)
