"""HiDiffusion's infotext: prefixed, human-readable keys; writing them and reading them back.

Written only when HiDiffusion is on, one key per value. The core keys are always written, the
advanced ones only when they differ from the built-in defaults; reading fills the built-in default
for a missing advanced key, so a pasted image regenerates exactly. XYZ cells share one
``extra_generation_params`` dict (``copy(p)`` is shallow), so every write first removes all of our
keys. An infotext without "HiDiffusion" unticks the box and leaves the other fields alone.

Pure Python: no WebUI and no gradio imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from .args import FIELDS, ArgsError, ScriptArgs, coerce, defaults

__all__ = [
    "KEYS",
    "PASTE_KEYS",
    "SCHEDULE_KEYS",
    "args_from_infotext",
    "paste_key",
    "paste_value",
    "remove",
    "write",
    "write_schedule",
]

ENABLED = "HiDiffusion"
KEYS: dict[str, str] = {
    "preset": "HiDiffusion preset",
    "raunet": "HiDiffusion RAU-Net",
    "mswmsa": "HiDiffusion MSW-MSA",
    "t1": "HiDiffusion T1",
    "t2": "HiDiffusion T2",
    "aggressive": "HiDiffusion aggressive",
    "time_mode": "HiDiffusion time mode",
    "msw_window": "HiDiffusion MSW-MSA window",
    "rau_upscale": "HiDiffusion RAU-Net upscale",
    "ca_upscale": "HiDiffusion CA upscale",
    "hires": "HiDiffusion hires",
}
PASTE_KEYS: tuple[str, ...] = (ENABLED, *KEYS.values())
"""Every settings key we write (the script's ``paste_field_names``): A1111's "Send to img2img" from
the txt2img gallery copies the fields pasted by one of these keys (``KEYED_FIELDS``) from tab to tab."""

SCHEDULE_KEYS = {False: "HiDiffusion schedule", True: "HiDiffusion hires schedule"}
"""The effective schedule of the first / hires pass, written only when it differs from what the
settings imply (``schedule.PassSchedule.differs``). A record, not a setting: paste reads the
settings keys only, so an image restores the same settings with or without it."""

_DEFAULTS = defaults()
_BY_NAME = {f.name: f for f in FIELDS}


def _number(x: float) -> str:
    return f"{float(x):g}"


def remove(params: MutableMapping[str, Any]) -> None:
    """Drop every HiDiffusion key (a stale one would otherwise leak into the next XYZ cell)."""
    for key in (*PASTE_KEYS, *SCHEDULE_KEYS.values()):
        params.pop(key, None)


def write(params: MutableMapping[str, Any], a: ScriptArgs, *, hires: bool = False) -> None:
    """Record ``a`` in ``p.extra_generation_params``; ``hires``: the job has a hires-fix pass."""
    remove(params)
    if not a.enabled:
        return
    params[ENABLED] = True
    params[KEYS["preset"]] = a.preset
    params[KEYS["raunet"]] = a.raunet
    params[KEYS["mswmsa"]] = a.mswmsa
    if a.custom_timing:
        params[KEYS["t1"]] = _number(a.t1)
        params[KEYS["t2"]] = _number(a.t2)
        params[KEYS["aggressive"]] = _number(a.aggressive)
    if a.time_mode != _DEFAULTS["time_mode"]:
        params[KEYS["time_mode"]] = a.time_mode
    if (a.msw_start, a.msw_end) != (_DEFAULTS["msw_start"], _DEFAULTS["msw_end"]):
        params[KEYS["msw_window"]] = f"{_number(a.msw_start)}-{_number(a.msw_end)}"
    for name in ("rau_upscale", "ca_upscale"):
        if getattr(a, name) != _DEFAULTS[name]:
            params[KEYS[name]] = getattr(a, name)
    if hires:
        params[KEYS["hires"]] = a.hires


def write_schedule(params: MutableMapping[str, Any], record: str, *, hires: bool = False) -> None:
    """Record a pass's effective schedule (``PassSchedule.record()``)."""
    params[SCHEDULE_KEYS[hires]] = record


def _enabled(d: Mapping[str, Any]) -> bool:
    value = d.get(ENABLED)
    return value is not None and str(value).strip().lower() not in ("false", "0", "")


def _window(d: Mapping[str, Any]) -> tuple[float, float]:
    text = d.get(KEYS["msw_window"])
    if text is None:
        return _DEFAULTS["msw_start"], _DEFAULTS["msw_end"]
    start, sep, end = str(text).partition("-")
    if not sep:
        raise ArgsError(f"infotext {KEYS['msw_window']!r} must look like 'start-end', got {text!r}")
    return coerce(_BY_NAME["msw_start"], start.strip()), coerce(_BY_NAME["msw_end"], end.strip())


def _field(d: Mapping[str, Any], name: str) -> Any:
    """A field's value from an infotext with HiDiffusion on (built-in default when absent)."""
    if name == "enabled":
        return _enabled(d)
    if name == "custom_timing":
        return any(KEYS[k] in d for k in ("t1", "t2", "aggressive"))
    if name in ("msw_start", "msw_end"):
        return _window(d)[0 if name == "msw_start" else 1]
    key = KEYS.get(name)
    if key is None or key not in d:
        return _DEFAULTS[name]
    return coerce(_BY_NAME[name], d[key])


def paste_value(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """The paste function of a UI field: its value from a parsed infotext, or None for "no change".

    Without "HiDiffusion" in the infotext only the enable box changes (to off). Fields that
    only matter with a custom schedule or a hires pass stay as they are when their keys are absent.
    """

    def value(d: Mapping[str, Any]) -> Any:
        if name == "enabled":
            return _enabled(d)
        if not _enabled(d):
            return None
        if name in ("t1", "t2", "aggressive") and KEYS[name] not in d:
            return None
        if name == "hires" and KEYS["hires"] not in d:
            return None
        try:
            return _field(d, name)
        except ArgsError:
            return None  # a malformed key leaves the component as it is

    return value


# Fields that are one key's value as written, kept as they are when it is absent: the paste button
# reads these keys itself (paste.py says why a key beats a function where both would do).
KEYED_FIELDS = ("preset", "raunet", "mswmsa", "t1", "t2", "aggressive", "hires")


def paste_key(name: str) -> str | Callable[[Mapping[str, Any]], Any]:
    """What the paste button reads for a UI field: its infotext key, or its ``paste_value`` function."""
    return KEYS[name] if name in KEYED_FIELDS else paste_value(name)


def args_from_infotext(d: Mapping[str, Any]) -> ScriptArgs:
    """The ScriptArgs an infotext describes (ArgsError on malformed values)."""
    if not _enabled(d):
        return ScriptArgs(enabled=False)
    return ScriptArgs(**{f.name: _field(d, f.name) for f in FIELDS})
