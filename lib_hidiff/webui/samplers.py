"""CFG++ samplers in a WebUI: λ, infotext, foreign sampler names -- shared by every host.

How the samplers enter the host's list and how they get the unconditional prediction differ per
host: ``register`` / ``unregister`` ask the host adapter (lib_hidiff/webui/hosts).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from lib_hidiff import cfgpp

from . import hosts, settings

__all__ = [
    "foreign_name",
    "lambda_for",
    "on_infotext_pasted",
    "register",
    "registered",
    "remove_infotext",
    "unregister",
]

log = logging.getLogger("hidiffusion")

INFOTEXT_SCALE = "CFGpp scale"  # no "+" in keys: the WebUI's infotext parser drops it
INFOTEXT_MODE = settings.INFOTEXT["cfgpp_scale_mode"]
INFOTEXT_VARIANT = settings.INFOTEXT["cfgpp_dpmpp_2m_variant"]
INFOTEXT_HIRES = settings.INFOTEXT["cfgpp_hires_scale"]
INFOTEXT_KEYS = (INFOTEXT_SCALE, INFOTEXT_MODE, INFOTEXT_VARIANT, INFOTEXT_HIRES)



# -- λ ------------------------------------------------------------------------------------------
def lambda_for(p: Any, cfg_scale: float) -> tuple[float, dict[str, Any]]:
    """λ for this pass and the infotext entries that record it."""
    mode = settings.get("cfgpp_scale_mode")
    hires_scale = float(settings.get("cfgpp_hires_scale") or 0.0)
    if getattr(p, "is_hr_pass", False) and hires_scale > 0:
        return hires_scale, {INFOTEXT_HIRES: hires_scale}
    lam = cfgpp.lambda_from_cfg(cfg_scale, mode)
    return lam, {INFOTEXT_SCALE: round(lam, 4), INFOTEXT_MODE: mode}


def remove_infotext(params: dict[str, Any]) -> None:
    """Drop the CFG++ keys (XYZ cells share one dict; a cell with another sampler must not keep them)."""
    for key in INFOTEXT_KEYS:
        params.pop(key, None)


# -- registration (the host adapter knows how) -------------------------------------------------------
def register() -> list[str]:
    """Add the CFG++ samplers this host lacks; returns the names now provided by us."""
    return hosts.current().register_samplers(cfgpp.SAMPLERS)


def unregister() -> None:
    """Take our samplers out again (script unload; registration runs anew on reload)."""
    hosts.current().unregister_samplers()


def registered() -> list[str]:
    return hosts.current().registered_samplers()


# -- infotext from other UIs --------------------------------------------------------------------
def _normalize(name: str) -> str:
    s = str(name).strip().lower().replace("_", " ")
    s = re.sub(r"\bcfg ?pp\b|\bcfg\+\+", "cfg++", s)
    s = re.sub(r"\bdpmpp\b", "dpm++", s)
    s = re.sub(r"^k ", "", s)
    s = re.sub(r"\bancestral\b", "a", s)
    return re.sub(r"\s+", " ", s).strip()


def _spellings() -> dict[str, str]:
    table = {}
    for info in cfgpp.SAMPLERS:
        for spelling in (info.name, info.key, *info.aliases):
            table.setdefault(_normalize(spelling), info.name)
    return table


def foreign_name(name: str | None, available: Any, suffixes: Any = ()) -> str | None:
    """Our display name for a reForge / ComfyUI spelling of a CFG++ sampler, or None.

    ``available``: the WebUI's sampler names (a name already among them is left alone, and only
    names among them are mapped to); ``suffixes``: schedule labels that may trail the name
    ("Euler Ancestral CFG++ Karras").
    """
    if not name or name in available:
        return None
    table = _spellings()
    for suffix in ("", *suffixes):
        if suffix and not name.endswith(" " + suffix):
            continue
        base = table.get(_normalize(name[: -len(suffix) - 1] if suffix else name))
        if base is not None and base in available:
            return f"{base} {suffix}" if suffix else base
    return None


def on_infotext_pasted(infotext: str, params: dict[str, Any]) -> None:
    """Map foreign CFG++ sampler spellings to ours; their λ is the raw CFG value."""
    from modules import sd_samplers

    available = set(sd_samplers.all_samplers_map)
    try:
        from modules import sd_schedulers

        suffixes = [s for x in sd_schedulers.schedulers for s in (x.label, x.name, *(x.aliases or []))]
    except ImportError:
        suffixes = []
    mapped = False
    for key in ("Sampler", "Hires sampler"):
        ours = foreign_name(params.get(key), available, suffixes)
        if ours is not None:
            params[key] = ours
            mapped = True
    if mapped and INFOTEXT_MODE not in params:
        params[INFOTEXT_MODE] = "raw"  # reForge / ComfyUI pass the CFG value as λ
