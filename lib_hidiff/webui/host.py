"""Which WebUI hosts the extension, and whether the extension may act at all.

A1111 1.10 (and forks that keep its ldm/sgm UNets and its CFG denoiser) is supported. SD.Next is
diffusers-only and ships HiDiffusion itself; Forge / reForge patch UNets through their own
``UnetPatcher`` and have their own CFG++ samplers: on those the extension steps aside with one log
line. ``--hidiffusion-disable`` (preload.py) turns everything off.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

__all__ = ["A1111", "FORGE", "SDNEXT", "active", "detect", "disabled_by_flag", "step_aside_message"]

log = logging.getLogger("hidiffusion")

A1111, SDNEXT, FORGE = "a1111", "sdnext", "forge"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect() -> str:
    """The host family: "sdnext", "forge" (Forge / reForge) or "a1111"."""
    if _has_module("modules.scripts_manager"):
        return SDNEXT
    try:
        shared = importlib.import_module("modules.shared")
    except Exception:  # an import failure here just means "not SD.Next's shared"
        shared = None
    if shared is not None and (hasattr(shared, "native") or hasattr(shared, "Backend")):
        return SDNEXT
    if _has_module("modules_forge") or _has_module("ldm_patched"):
        return FORGE
    return A1111


def disabled_by_flag() -> bool:
    """True when the WebUI was started with --hidiffusion-disable."""
    try:
        from modules import shared
    except Exception:
        return False
    return bool(getattr(getattr(shared, "cmd_opts", None), "hidiffusion_disable", False))


def step_aside_message(host: str) -> str | None:
    """The one log line for a host the extension does not act on (None for A1111)."""
    if host == SDNEXT:
        return (
            "sd-webui-hidiffusion: SD.Next detected; this extension stays hidden. Use SD.Next's built-in "
            "HiDiffusion (txt2img/img2img > Advanced > HiDiffusion; Settings > Pipeline Modifiers)."
        )
    if host == FORGE:
        return (
            "sd-webui-hidiffusion: Forge/reForge detected; this extension only supports the AUTOMATIC1111 "
            "WebUI 1.10 UNets and stays hidden (reForge ships its own CFG++ samplers)."
        )
    return None


_announced: set[str] = set()


def active() -> bool:
    """Should the extension register anything? Logs once why not."""
    if disabled_by_flag():
        reason = "sd-webui-hidiffusion: disabled by --hidiffusion-disable"
    else:
        reason = step_aside_message(detect())
    if reason is None:
        return True
    if reason not in _announced:
        _announced.add(reason)
        log.warning(reason)
    return False
