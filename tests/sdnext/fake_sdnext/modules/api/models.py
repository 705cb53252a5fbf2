"""API models (modules/api/models.py@058a7f0c): the script info records ``setup_ui`` builds."""

from __future__ import annotations

from typing import Any


class ScriptArg:
    def __init__(self, label: str = "", **kwargs: Any):
        self.label = label
        self.value = self.minimum = self.maximum = self.step = self.choices = None
        for k, v in kwargs.items():
            setattr(self, k, v)


class ItemScript:
    def __init__(self, name: str, is_img2img: bool, is_alwayson: bool, args: list[ScriptArg]):
        self.name, self.is_img2img, self.is_alwayson, self.args = name, is_img2img, is_alwayson, args
