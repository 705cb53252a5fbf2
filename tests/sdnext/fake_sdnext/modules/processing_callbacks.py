"""SD.Next's per-step callback (modules/processing_callbacks.py@058a7f0c:15-135), reduced.

``diffusers_callback`` is the pipeline's ``callback_on_step_end`` -- the only per-step hook in
SD.Next, and it is SD.Next's own. It counts steps, raises on interrupt, and applies ``cfg_end``:
once ``step >= int(num_timesteps * cfg_end)`` it sets ``pipe._guidance_scale = 0`` and keeps only
the conditional half of the prompt embeddings, so the rest of the run has no unconditional pass.
"""

from __future__ import annotations

from typing import Any

from modules import shared

p = None


def set_callbacks_p(processing: Any) -> None:
    global p
    p = processing


def diffusers_callback(pipe: Any, step: int = 0, timestep: int = 0, kwargs: dict | None = None) -> dict:
    kwargs = {} if kwargs is None else kwargs
    shared.state.step()
    if shared.state.interrupted or shared.state.skipped:
        raise AssertionError("Interrupted...")
    if step == 0:
        pipe._cfg_end_applied = False
    cfg_end = getattr(p, "cfg_end", 1.0) or 1.0
    total = getattr(pipe, "num_timesteps", 0)
    if cfg_end < 1.0 and not getattr(pipe, "_cfg_end_applied", False) and step >= int(total * cfg_end):
        pipe._cfg_end_applied = True
        pipe._guidance_scale = 0.0
        for key in ("prompt_embeds", "negative_prompt_embeds"):
            tensor = kwargs.get(key)
            if tensor is not None and tensor.shape[0] % 2 == 0:
                kwargs[key] = tensor.chunk(2)[-1]
    return kwargs
