"""SD.Next's infotext writer (modules/processing_info.py@058a7f0c:18-250), reduced.

"Sampler" is ``p.sampler_name`` unless 'Default', "Scheduler" the scheduler's class name; then
``p.extra_generation_params`` as given (callables are *not* evaluated); None, numbers <= -1 and
empty strings are dropped; a key equal to its value is written alone; values with , : or a
newline are JSON-quoted.
"""

from __future__ import annotations

from typing import Any

from modules import shared
from modules.infotext import quote


def create_infotext(
    p: Any,
    all_prompts=None,
    all_seeds=None,
    all_subseeds=None,
    comments=None,
    iteration=0,
    position_in_batch=0,
    index=None,
    all_negative_prompts=None,
    grid=None,
) -> str:
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    prompts = all_prompts or p.all_prompts or [p.prompt]
    negatives = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
    seeds = all_seeds or p.all_seeds or [p.seed]
    scheduler = getattr(shared.sd_model, "scheduler", None)
    args: dict[str, Any] = {
        "Steps": p.steps,
        "Size": f"{p.width}x{p.height}",
        "Sampler": p.sampler_name if p.sampler_name != "Default" else None,
        "Scheduler": scheduler.__class__.__name__ if scheduler is not None else None,
        "Seed": seeds[index],
        "CFG scale": p.cfg_scale if p.cfg_scale > -1 else None,
        "CFG end": p.cfg_end if p.cfg_end < 1.0 else None,
        "CFG true": p.cfg_true if p.cfg_true > 0 else None,
        "App": "SD.Next",
        "Pipeline": shared.sd_model.__class__.__name__,
    }
    if "hires" in p.ops:
        args["Hires sampler"] = p.hr_sampler_name if p.hr_sampler_name != "Default" else None
        args["Hires CFG scale"] = p.cfg_image if p.cfg_image is not None and p.cfg_image > -1 else None
    args.update(p.extra_generation_params)
    for k, v in list(args.items()):
        if v is None or (type(v) in (int, float) and v <= -1) or (type(v) is str and len(v) == 0):
            del args[k]
    params = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in args.items())
    negative = negatives[index] if index < len(negatives) else ""
    return f"{prompts[index]}\nNegative prompt: {negative or ''}\n{params}".strip()
