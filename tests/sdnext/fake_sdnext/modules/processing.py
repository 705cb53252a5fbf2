"""SD.Next's ``process_images`` (modules/processing.py@058a7f0c:138-590), reduced.

Order that matters: ``before_process`` -> ``before_process_callback`` -> [``process`` -> ``p.init()``
-> per batch: ``before_process_batch``, ``process_batch``, ``process_images``,
``process_diffusers`` (the sampling passes), ``postprocess_batch``, ``postprocess_batch_list``,
per image infotext (and the detailer) -> ``postprocess``] in a ``try`` whose ``finally`` runs
``after_process_callback``. An interrupt skips ``postprocess_batch`` and ``postprocess``; any other
exception skips everything but the ``finally``.
"""

from __future__ import annotations

import json
import random
from typing import Any

from modules import script_callbacks, scripts_manager, shared
from modules.processing_class import (  # noqa: F401
    StableDiffusionProcessing,
    StableDiffusionProcessingControl,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
)
from modules.processing_helpers import get_sampler_name  # noqa: F401
from modules.processing_info import create_infotext


class Processed:
    def __init__(
        self,
        p: Any,
        images_list: list,
        seed: int = -1,
        info: str = "",
        infotexts: list | None = None,
        comments: str = "",
    ):
        self.images = images_list
        self.seed = seed
        self.info = info
        self.infotexts = infotexts or [info]
        self.comments = comments
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.extra_generation_params = p.extra_generation_params
        self.all_seeds = p.all_seeds

    def js(self) -> str:
        return json.dumps(
            {
                "infotexts": self.infotexts,
                "sampler_name": self.sampler_name,
                "extra_generation_params": self.extra_generation_params,
                "seed": self.seed,
            }
        )


def apply_overlay(image: Any, paste_loc: Any, index: int, overlays: list | None) -> Any:
    """processing_helpers.py:109-131: alpha-composite the original (alpha = outside the mask) over the
    result -- here on [0, 1] tensors instead of RGBA images."""
    if overlays is None or index >= len(overlays):
        return image
    picture, alpha = overlays[index]
    return picture * alpha + image * (1.0 - alpha)


def _runner(p: Any) -> scripts_manager.ScriptRunner | None:
    return p.scripts if isinstance(p.scripts, scripts_manager.ScriptRunner) else None


def process_init(p: Any) -> None:
    seed = p.seed if p.seed not in (None, -1) else random.randrange(4294967294)
    n = p.batch_size * p.n_iter
    p.all_prompts = [p.prompt] * n
    p.all_negative_prompts = [p.negative_prompt] * n
    p.all_seeds = [int(seed) + i for i in range(n)]
    p.all_subseeds = [int(seed) + i for i in range(n)]


def process_images(p: Any) -> Processed | None:
    if shared.sd_model is None:
        return None
    if _runner(p) is not None:
        p.scripts.before_process(p)
    try:
        script_callbacks.before_process_callback(p)
        results = process_images_inner(p)
    finally:
        script_callbacks.after_process_callback(p)
    return results


def process_images_inner(p: Any) -> Processed:
    from modules.processing_diffusers import process_diffusers

    infotexts, output_images = [], []
    process_init(p)
    if _runner(p) is not None:
        p.scripts.process(p)
    shared.state.begin("Process")
    p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
    for n in range(p.n_iter):
        p.iteration = n
        if shared.state.interrupted:
            break
        sl = slice(n * p.batch_size, (n + 1) * p.batch_size)
        p.prompts, p.negative_prompts = p.all_prompts[sl], p.all_negative_prompts[sl]
        p.seeds, p.subseeds = p.all_seeds[sl], p.all_subseeds[sl]
        if _runner(p) is not None:
            p.scripts.before_process_batch(
                p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds
            )
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        samples = None
        if _runner(p) is not None:
            results = p.scripts.process_images(p)
            if results is not None:
                samples = results.images
        if samples is None:
            samples = process_diffusers(p)
        if shared.state.interrupted:
            break
        if _runner(p) is not None:
            p.scripts.postprocess_batch(p, samples, batch_number=n)
            batch = scripts_manager.PostprocessBatchListArgs(list(samples))
            p.scripts.postprocess_batch_list(p, batch, batch_number=n)
            samples = batch.images
        overlay = (
            p.mask_apply_overlay
            if getattr(p, "mask_apply_overlay", None) is not None
            else shared.opts.mask_apply_overlay
        )
        for i, sample in enumerate(samples):
            if overlay:  # process_samples :371-375
                sample = apply_overlay(
                    sample, getattr(p, "paste_to", None), i, getattr(p, "overlay_images", None)
                )
            infotexts.append(create_infotext(p, index=n * p.batch_size + i))
            output_images.append(sample)
    results = Processed(
        p, output_images, seed=p.all_seeds[0], info=infotexts[0] if infotexts else "", infotexts=infotexts
    )
    if _runner(p) is not None and not (shared.state.interrupted or shared.state.skipped):
        p.scripts.postprocess(p, results)
    return results
