"""The native-size hint: a small read-only route that javascript/hidiffusion.js asks.

It tells the UI the loaded model's native size so the accordion can say "this size is at or below
native: HiDiffusion leaves it unchanged". Nothing functional depends on it; it never loads a model.
"""

from __future__ import annotations

from typing import Any

import lib_hidiff.unet as hd

from . import hosts, settings

__all__ = ["ROUTE", "add_route", "native_size_info"]

ROUTE = "/hidiffusion/native-size"
LATENT_SCALE = 8  # pixels per latent cell for SD 1.x/2.x and SDXL VAEs


def native_size_info(sd_model: Any) -> dict[str, Any]:
    """{"supported", "family", "width", "height", "hint"} for a loaded model (or None)."""
    info: dict[str, Any] = {"supported": False, "hint": bool(settings.get("hidiffusion_size_hint"))}
    host = hosts.current()
    unet = host.unet(sd_model) if sd_model is not None else None
    if unet is None or getattr(sd_model, "is_sd3", False):
        return info
    try:
        layout = host.layout(sd_model, unet)
    except hd.UnsupportedUNet as e:
        return {**info, "reason": str(e)}
    h, w = layout.native
    return {
        **info,
        "supported": True,
        "family": layout.family,
        "width": w * LATENT_SCALE,
        "height": h * LATENT_SCALE,
    }


def add_route(demo: Any, app: Any) -> None:
    """on_app_started: register the GET route (reads the model already loaded, never loads one)."""

    def native_size() -> dict[str, Any]:
        from modules import sd_models

        return native_size_info(getattr(sd_models.model_data, "sd_model", None))

    if not any(getattr(r, "path", None) == ROUTE for r in getattr(app, "routes", [])):
        app.add_api_route(ROUTE, native_size, methods=["GET"])
