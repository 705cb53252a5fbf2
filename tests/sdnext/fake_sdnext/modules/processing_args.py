"""SD.Next's pipeline arguments (modules/processing_args.py@058a7f0c:203-450), reduced.

Prompts become embeddings (SD.Next's prompt parser; here: deterministic token ids through the
pipeline's own text encoder), ``guidance_scale`` is the pass's CFG scale (:280-281), the
generator is seeded from ``p.seeds``, ``callback_on_step_end`` is SD.Next's own
``diffusers_callback`` (:335-348), and ``p.task_args`` override arguments the pipeline takes
(:385-395).
"""

from __future__ import annotations

import inspect
import zlib
from typing import Any

import torch

from modules import processing_callbacks


def _encode(pipe: Any, prompts: list[str]) -> torch.Tensor:
    encoder = pipe.text_encoder
    vocab = encoder.config.vocab_size
    rows = []
    for prompt in prompts:
        g = torch.Generator().manual_seed(zlib.crc32(str(prompt).encode()))
        rows.append(torch.randint(0, vocab, (7,), generator=g))
    with torch.no_grad():
        return encoder(torch.stack(rows))[0]


def get_generator(p: Any) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in p.seeds]


def set_pipeline_args(
    p: Any,
    model: Any,
    prompts: list,
    negative_prompts: list,
    prompts_2: list | None = None,
    negative_prompts_2: list | None = None,
    prompt_attention: str | None = None,
    desc: str | None = "",
    **kwargs: Any,
) -> dict[str, Any]:
    possible = set(inspect.signature(type(model).__call__).parameters)
    args: dict[str, Any] = {
        "prompt_embeds": _encode(model, prompts),
        "negative_prompt_embeds": _encode(model, negative_prompts),
        "generator": get_generator(p),
    }
    if p.cfg_scale is not None and p.cfg_scale > -1:
        args["guidance_scale"] = p.cfg_scale
    processing_callbacks.set_callbacks_p(p)
    if "callback_on_step_end" in possible:
        args["callback_on_step_end"] = processing_callbacks.diffusers_callback
        args["callback_on_step_end_tensor_inputs"] = list(
            getattr(model, "_callback_tensor_inputs", ["latents"])
        )
    if kwargs.get("image") is not None:
        p.init_images = kwargs.pop("image")
    kwargs.pop("strength", None)
    for k, v in kwargs.items():
        if k in possible and v is not None and not (isinstance(v, (int, float)) and v <= -1):
            args[k] = v
    from modules import sd_models

    task = sd_models.get_diffusers_task(model)
    if task == sd_models.DiffusersTaskType.IMAGE_2_IMAGE:  # task_specific_kwargs
        args["image"], args["strength"] = p.init_images, p.denoising_strength
    elif task == sd_models.DiffusersTaskType.INPAINTING and p.init_images:  # :108-126
        mask_image = p.task_args.get("image_mask", None) or getattr(p, "image_mask", None)
        args.update(image=p.init_images, mask_image=mask_image, strength=p.denoising_strength)
        args["height"], args["width"] = p.height, p.width
    for k, v in {**(p.task_args or {}), **(getattr(model, "task_args", None) or {})}.items():
        if k in possible:
            args[k] = v
    if "width" in possible and "width" not in args and "image" not in args:
        args["width"], args["height"] = p.width, p.height
    return args
