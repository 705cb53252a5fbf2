"""API endpoints (modules/api/endpoints.py@058a7f0c:16-23, :209-220, :432-445), reduced."""

from __future__ import annotations

from typing import Any


def get_samplers() -> list[dict[str, Any]]:
    """/sdapi/v1/samplers: the keys of sd_samplers_diffusers.config (not the sampler list)."""
    from modules import sd_samplers_diffusers

    return [
        {"name": k, "options": v}
        for k, v in sd_samplers_diffusers.config.items()
        if k not in ("All", "Default", "Res4Lyf")
    ]


def get_schedulers() -> list[dict[str, Any]]:
    """/sdapi/v1/schedulers: rebuilds the sampler list first."""
    from modules.sd_samplers import list_samplers

    return [
        {
            "name": s.name,
            "cls": s.constructor.__name__ if s.constructor is not None else None,
            "options": s.options,
        }
        for s in list_samplers()
    ]


def post_pnginfo(geninfo: str) -> dict[str, Any]:
    """/sdapi/v1/png-info on an image carrying ``geninfo``: parsed, then the pasted callbacks run."""
    from modules import infotext, script_callbacks

    params = infotext.parse(geninfo)
    script_callbacks.infotext_pasted_callback(geninfo, params)
    return {"info": geninfo, "parameters": params}
