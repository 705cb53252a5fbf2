"""The CFG++ inversion's infotext: what is written, and how paste / "Send to img2img" read it back.

Same pattern as infotext.py: one key per setting, written only when the inversion is on, every
write first removes all of our keys (XYZ cells share ``extra_generation_params``); an infotext
without "CFGpp inversion" unticks the box and leaves the other fields alone. Keys spell CFG++ as
"CFGpp": the WebUI's infotext parser does not take "+" in keys. "CFGpp inversion scale" records the
λ the inversion used (it depends on the scale-mode setting); paste does not read it.

Pure Python: no WebUI and no gradio imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from .args import ArgsError, coerce
from .inversion_args import FIELDS, OWNER, InversionArgs

__all__ = ["ENABLED", "KEYS", "LAMBDA", "PASTE_KEYS", "args_from_infotext", "paste_value", "remove", "write"]

ENABLED = "CFGpp inversion"
KEYS = {
    "source_prompt": "CFGpp inversion prompt",
    "cfg_scale": "CFGpp inversion CFG scale",
    "iterations": "CFGpp inversion iterations",
}
LAMBDA = "CFGpp inversion scale"
PASTE_KEYS: tuple[str, ...] = (ENABLED, *KEYS.values())

_BY_NAME = {f.name: f for f in FIELDS}


def remove(params: MutableMapping[str, Any]) -> None:
    for key in (*PASTE_KEYS, LAMBDA):
        params.pop(key, None)


def write(params: MutableMapping[str, Any], a: InversionArgs) -> None:
    remove(params)
    if not a.enabled:
        return
    params[ENABLED] = True
    if a.source_prompt:
        params[KEYS["source_prompt"]] = a.source_prompt
    if a.cfg_scale:
        params[KEYS["cfg_scale"]] = f"{a.cfg_scale:g}"
    params[KEYS["iterations"]] = a.iterations


def _enabled(d: Mapping[str, Any]) -> bool:
    value = d.get(ENABLED)
    return value is not None and str(value).strip().lower() not in ("false", "0", "")


def _field(d: Mapping[str, Any], name: str) -> Any:
    if name == "enabled":
        return _enabled(d)
    key = KEYS[name]
    if key not in d:
        return _BY_NAME[name].default
    value = d[key]
    return coerce(_BY_NAME[name], str(value) if name == "source_prompt" else value, OWNER)


def paste_value(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """The paste function of a UI field: its value from a parsed infotext, or None for "no change"."""

    def value(d: Mapping[str, Any]) -> Any:
        if name == "enabled":
            return _enabled(d)
        if not _enabled(d):
            return None
        try:
            return _field(d, name)
        except ArgsError:
            return None  # a malformed key leaves the component as it is

    return value


def args_from_infotext(d: Mapping[str, Any]) -> InversionArgs:
    """The InversionArgs an infotext describes (ArgsError on malformed values)."""
    if not _enabled(d):
        return InversionArgs()
    return InversionArgs(**{f.name: _field(d, f.name) for f in FIELDS})
