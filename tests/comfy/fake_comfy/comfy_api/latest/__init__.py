"""comfy_api/latest/__init__.py (a125cd84), reduced: ``io`` (the V3 schema, :12) and ``ComfyExtension``
(:79-90), what a custom node's ``comfy_entrypoint`` returns."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:  # noqa: B027  (optional hook, as upstream)
        """Called once when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The extension's node classes."""


__all__ = ["ComfyExtension", "io"]
