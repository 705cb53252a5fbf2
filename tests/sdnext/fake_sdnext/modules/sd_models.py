"""SD.Next's pipeline switching (modules/sd_models.py@058a7f0c:1083-1380), reduced.

``set_diffuser_pipe(pipe, task)`` returns the pipe when it already has that task, else a new
pipeline of the task's class built from the same components (``AutoPipelineFor*.from_pipe``:
the UNet module is shared) carrying SD.Next's attributes over (``sd_checkpoint_info``,
``default_scheduler``, ...: :1252-1295). ``switch_pipe(cls, pipe)`` does the same for a given
class (PAG, APG).
"""

from __future__ import annotations

from enum import Enum
from types import SimpleNamespace
from typing import Any

_CARRY = ("sd_checkpoint_info", "sd_model_checkpoint", "sd_model_hash", "default_scheduler", "task_args")


class DiffusersTaskType(Enum):
    TEXT_2_IMAGE = 1
    IMAGE_2_IMAGE = 2
    INPAINTING = 3
    INSTRUCT = 4
    MODULAR = 5


class CheckpointInfo:
    def __init__(self, name: str):
        self.name = self.model_name = self.title = name
        self.filename = f"/models/Diffusers/{name}"
        self.hash = name


model_data = SimpleNamespace(sd_model=None, sd_refiner=None)


def get_diffusers_task(pipe: Any) -> DiffusersTaskType:
    name = pipe.__class__.__name__
    if "Modular" in name:
        return DiffusersTaskType.MODULAR
    if "Inpaint" in name:
        return DiffusersTaskType.INPAINTING
    if "Img2Img" in name:
        return DiffusersTaskType.IMAGE_2_IMAGE
    return DiffusersTaskType.TEXT_2_IMAGE


def _carry(new: Any, old: Any) -> Any:
    for attr in _CARRY:
        if hasattr(old, attr):
            setattr(new, attr, getattr(old, attr))
    return new


def set_diffuser_pipe(pipe: Any, new_pipe_type: DiffusersTaskType) -> Any:
    import diffusers

    if pipe is None or get_diffusers_task(pipe) in (new_pipe_type, DiffusersTaskType.MODULAR):
        return pipe
    auto = {
        DiffusersTaskType.TEXT_2_IMAGE: diffusers.AutoPipelineForText2Image,
        DiffusersTaskType.IMAGE_2_IMAGE: diffusers.AutoPipelineForImage2Image,
        DiffusersTaskType.INPAINTING: diffusers.AutoPipelineForInpainting,
    }[new_pipe_type]
    base = pipe
    if "PAG" in base.__class__.__name__ or "APG" in base.__class__.__name__:
        import diffusers as d

        base = switch_pipe(d.StableDiffusionPipeline, base)  # sd_models.py:1328-1332
    new = auto.from_pipe(base)
    new.set_progress_bar_config(disable=True)
    return _carry(new, pipe)


def switch_pipe(cls: type, pipeline: Any, force: bool = False, args: dict | None = None) -> Any:
    keys = _init_keys(cls)
    components = {k: v for k, v in pipeline.components.items() if k in keys}
    if "requires_safety_checker" in keys:
        components["requires_safety_checker"] = False
    new = cls(**components)
    new.set_progress_bar_config(disable=True)
    return _carry(new, pipeline)


def _init_keys(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def apply_balanced_offload(sd_model: Any, exclude: Any = None) -> Any:
    return sd_model


def move_model(model: Any, device: Any = None) -> None:
    pass
