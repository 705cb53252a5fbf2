"""SD.Next's PAG (modules/pag@058a7f0c:12-60): in ``process_pre``, when ``p.cfg_true != 0`` and the
model is an SD 1.x txt2img pipeline, ``shared.sd_model`` becomes a PAG pipeline built from the same
components; ``unapply`` (``process_post``) puts the original back. The fake PAG pipeline is the
plain pipeline under PAG's class name (what the extension sees), not a perturbed-attention run.
"""

from __future__ import annotations

from typing import Any

from diffusers import StableDiffusionPipeline

from modules import sd_models, shared

orig_pipeline = None


class StableDiffusionPAGPipeline(StableDiffusionPipeline):
    pass


def apply(p: Any) -> None:
    global orig_pipeline
    if type(shared.sd_model) is StableDiffusionPAGPipeline:
        unapply()
    if p.cfg_true == 0:
        return
    if sd_models.get_diffusers_task(shared.sd_model) != sd_models.DiffusersTaskType.TEXT_2_IMAGE:
        return
    orig_pipeline = shared.sd_model
    shared.sd_model = sd_models.switch_pipe(StableDiffusionPAGPipeline, shared.sd_model)
    p.task_args["cfg_true"] = p.cfg_true  # (unused by the fake pipeline)
    p.extra_generation_params["CFG true"] = p.cfg_true


def unapply() -> Any:
    global orig_pipeline
    if orig_pipeline is not None:
        shared.sd_model = orig_pipeline
        orig_pipeline = None
    return shared.sd_model.__class__
