"""The paste fields of our accordions: what the WebUIs' paste button (Restore, PNG info's "Send to") reads.

Each entry is (component, infotext key) or (component, function of the parsed infotext). Every host's
paste handler takes both, but treats them differently:

* A key: the handler reads ``params[key]`` and converts it with the component's type. SD.Next first
  asks ``should_skip(key)`` (the user's "skip params" setting; generation_parameters_copypaste.py
  @058a7f0c:304), and A1111's / Forge's "Send to img2img" from the txt2img gallery copies the fields
  whose key is in ``paste_field_names`` (infotext_utils.py@1.10.1:168-175, Forge dfdcbab :179-186).
* A function: its result is used. SD.Next sends any result that is not a ``gr.update`` dict through
  ``should_skip(key)`` as well, which calls ``key.lower()`` (:182): a function returning a plain
  value raises there and nothing at all is restored. A ``gr.update`` dict is used as it is on every
  host (SD.Next :295-297, A1111 1.10.1 :502-503, Forge dfdcbab :598-599), as SD.Next's own script
  dropdown does (scripts_manager.py@058a7f0c:597).

So a field that is exactly one key as written, left as it is when the key is absent, is pasted by
its key; a field worked out from several keys or from a key's absence (the enable box, defaults of
advanced settings) by a function whose value goes out as ``gr.update(value=...)``. Only an accordion
that both txt2img and img2img have uses keys: the "Send to" copy pairs the source tab's named fields
with the target tab's by position (SD.Next generation_parameters_copypaste.py@058a7f0c:236-241), so
a key that only one tab has would shift the fields after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import hosts

__all__ = ["fields", "as_update"]

PasteKey = str | Callable[[Mapping[str, Any]], Any]


def as_update(
    read: Callable[[Mapping[str, Any]], Any], update: Callable[..., Any]
) -> Callable[[Mapping[str, Any]], Any]:
    """``read`` (a value, or None for "no change") as a paste function giving ``update(value=...)``."""

    def paste(params: Mapping[str, Any]) -> Any:
        value = read(params)
        return None if value is None else update(value=value)

    return paste


def fields(components: Sequence[Any], keys: Sequence[PasteKey]) -> list[tuple[Any, Any]]:
    """The (component, key or paste function) pairs for ``components``, as the running host needs them."""
    import gradio as gr

    pairs = [
        (c, k if isinstance(k, str) else as_update(k, gr.update))
        for c, k in zip(components, keys, strict=True)
    ]
    return hosts.current().paste_fields(pairs)
