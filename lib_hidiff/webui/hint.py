"""Read-only routes that tell the UI (javascript/hidiffusion.js) and API clients what HiDiffusion
will do, before they generate. Nothing functional depends on them; they never load a model.

* ``GET /hidiffusion/native-size``: the loaded model's native size.
* ``GET /hidiffusion/schedule?width=&height=&steps=&preset=...``: the effective schedule of each
  sampling pass (``schedule.PassSchedule``): the preset row ``auto`` picks and the steps that run
  RAD/RAU, CA and MSW-MSA, with a warning for an enabled part that runs on no step. The
  HiDiffusion parameters take the names and values of the API's dict form (``args.FIELDS``).

How a request becomes passes follows A1111 1.10 (Forge keeps it): the sampler's clock counts
``SamplerData.total_steps(steps)`` model calls (two per step for second-order samplers); img2img
runs ``int(min(denoising, 0.999) * steps) + 1`` steps (all of them with "img2img: do exactly the
amount of steps"); the hires pass runs its hires steps (or the first pass's) at the size the
WebUI upscales to. A host adapter with other rules overrides ``Host.model_calls(sampler, steps)``
method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lib_hidiff.unet as hd
from lib_hidiff.unet.layout import FAMILY_MAPS

from . import hosts, schedule, settings
from .args import FIELDS, ArgsError, parse_args

__all__ = ["ROUTE", "SCHEDULE_ROUTE", "add_route", "hires_size", "native_size_info", "schedule_info"]

ROUTE = "/hidiffusion/native-size"
SCHEDULE_ROUTE = "/hidiffusion/schedule"
LATENT_SCALE = schedule.LATENT_SCALE
_FIELD_NAMES = {f.name for f in FIELDS}


def _model_layout(sd_model: Any) -> tuple[hd.UNetLayout | None, str | None]:
    """The loaded model's layout through the host adapter; (None, None) without a UNet model,
    (None, why) for a UNet HiDiffusion does not support."""
    host = hosts.current()
    unet = host.unet(sd_model) if sd_model is not None else None
    if unet is None or getattr(sd_model, "is_sd3", False):
        return None, None
    try:
        return host.layout(sd_model, unet), None
    except hd.UnsupportedUNet as e:
        return None, str(e)


def native_size_info(sd_model: Any) -> dict[str, Any]:
    """{"supported", "family", "width", "height", "hint"} for a loaded model (or None)."""
    info: dict[str, Any] = {"supported": False, "hint": bool(settings.get("hidiffusion_size_hint"))}
    layout, reason = _model_layout(sd_model)
    if layout is None:
        return info if reason is None else {**info, "reason": reason}
    h, w = layout.native
    return {
        **info,
        "supported": True,
        "family": layout.family,
        "width": w * LATENT_SCALE,
        "height": h * LATENT_SCALE,
    }


# -- the request's passes, by the A1111 1.10 rules ----------------------------------------------------
def hires_size(
    width: int, height: int, scale: float, resize_x: int = 0, resize_y: int = 0
) -> tuple[int, int]:
    """The size the hires pass samples at (A1111 1.10 ``calculate_target_resolution``)."""
    if not resize_x and not resize_y:
        return int(width * scale), int(height * scale)
    if not resize_y:
        return resize_x, resize_x * height // width
    if not resize_x:
        return resize_y * width // height, resize_y
    if width / height < resize_x / resize_y:  # fills the width, cropped in height afterwards
        return resize_x, resize_x * height // width
    return resize_y * width // height, resize_y


def _model_calls(sampler: str | None, steps: int) -> int:
    """Ticks of the host's step clock for ``steps`` sampler steps."""
    return int(hosts.current().model_calls(sampler, steps))


def _img2img_fix_steps() -> bool:
    from modules import shared

    return bool((getattr(getattr(shared, "opts", None), "data", None) or {}).get("img2img_fix_steps", False))


class _BadRequest(ValueError):
    pass


def _number(request: Mapping[str, Any], name: str, kind: type, default: Any, low: float, high: float) -> Any:
    """A query value as ``kind`` (int or float) in [low, high]; absent or empty: ``default``."""
    value = request.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (low <= number <= high) or math.isinf(number) or (kind is int and not number.is_integer()):
        what = "an integer" if kind is int else "a number"
        where = f">= {low:g}" if math.isinf(high) else f"in [{low:g}, {high:g}]"
        raise _BadRequest(f"HiDiffusion schedule: {name!r} must be {what} {where}, got {value!r}")
    return kind(number)


# The numeric query parameters: (kind, default, lowest, highest). width/height default to the native size.
NUMBERS: dict[str, tuple[type, Any, float, float]] = {
    "width": (int, None, 8, math.inf),
    "height": (int, None, 8, math.inf),
    "steps": (int, 20, 1, math.inf),
    "denoising": (float, None, 0, 1),
    "hr_scale": (float, 2.0, 1, math.inf),
    "hr_resize_x": (int, 0, 0, math.inf),
    "hr_resize_y": (int, 0, 0, math.inf),
    "hr_steps": (int, 0, 0, math.inf),
}


def _query_numbers(request: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _number(request, name, *spec) for name, spec in NUMBERS.items()}


_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no", "")


def _flag(request: Mapping[str, Any], name: str) -> bool:
    value = request.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise _BadRequest(f"HiDiffusion schedule: {name!r} must be true or false, got {value!r}")
    return text in _TRUE


def _size_from_init_image(request: Mapping[str, Any]) -> bool:
    """img2img with width or height 0: SD.Next's img2img size fields default to 0, "keep the init
    image's size" (its Scale resize tab), so there is no size to plan for -- not a bad value."""
    if request.get("denoising") in (None, ""):
        return False
    return any(str(request.get(name, "")).strip() == "0" for name in ("width", "height"))


def schedule_info(sd_model: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    """The effective schedule of each pass of a request, as JSON for the UI and API clients.

    ``request``: width, height, steps, sampler; denoising (img2img); enable_hr, hr_scale,
    hr_resize_x, hr_resize_y, hr_steps, hr_sampler (txt2img hires fix); family (sd1 / sd2 / sdxl:
    plan for that model instead of the loaded one); and the HiDiffusion keys of the API's dict.
    """
    info: dict[str, Any] = {"supported": False, "hint": bool(settings.get("hidiffusion_size_hint"))}
    try:
        size_from_image = _size_from_init_image(request)
        if size_from_image:
            request = {k: v for k, v in request.items() if k not in ("width", "height")}
        # Every value is checked first: a bad one is an error whatever else the query says.
        q = _query_numbers(request)
        enable_hr = _flag(request, "enable_hr")
        family = request.get("family") or None
        if family is not None and family not in FAMILY_MAPS:
            raise _BadRequest(
                f"HiDiffusion schedule: 'family' must be one of {list(FAMILY_MAPS)}, got {family!r}"
            )
        args = parse_args([{k: v for k, v in request.items() if k in _FIELD_NAMES and v not in (None, "")}])
        model: hd.UNetLayout | str | None = family
        if model is None:
            model, reason = _model_layout(sd_model)
            if model is None:
                return {
                    **info,
                    "reason": reason or "no model with a UNet is loaded (or pass family=sd1|sd2|sdxl)",
                }
        if not args.enabled:
            return {**info, "supported": True, "text": "HiDiffusion is off", "warnings": [], "passes": []}
        if size_from_image:
            text = "img2img at the init image's size (width and height 0): set a size to see the schedule"
            return {**info, "supported": True, "text": text, "warnings": [], "passes": []}
        native = (FAMILY_MAPS[model].native,) * 2 if isinstance(model, str) else model.native
        width = q["width"] or native[1] * LATENT_SCALE
        height = q["height"] or native[0] * LATENT_SCALE
        steps = q["steps"]
        sampler = request.get("sampler") or None
        first = args.settings()
        denoising = q["denoising"]
        img2img_note = None
        if denoising is not None and not _img2img_fix_steps():
            requested, steps = steps, int(min(denoising, 0.999) * steps) + 1  # the part img2img runs
            img2img_note = f"img2img runs {steps} of {requested} steps at denoising {denoising:g}"
        passes = [schedule.pass_schedule(model, width, height, first, steps, _model_calls(sampler, steps))]
        hires_text = None
        if denoising is None and enable_hr:
            hr_w, hr_h = hires_size(width, height, q["hr_scale"], q["hr_resize_x"], q["hr_resize_y"])
            if args.hires == "off":
                hires_text = f"hires pass {hr_w}×{hr_h}: HiDiffusion off (Hires fix pass: off)"
            else:
                hr_steps = q["hr_steps"] or steps
                hr_settings = first.replace(raunet=False) if args.hires == "MSW-MSA only" else first
                hr_calls = _model_calls(request.get("hr_sampler") or sampler, hr_steps)
                passes.append(
                    schedule.pass_schedule(model, hr_w, hr_h, hr_settings, hr_steps, hr_calls, hires=True)
                )
    except (ArgsError, hd.SettingsError, _BadRequest) as e:
        return {**info, "error": str(e)}
    texts = [p.describe() for p in passes] + [t for t in (img2img_note, hires_text) if t]
    warnings = [w if not p.hires else f"hires pass: {w}" for p in passes for w in p.warnings()]
    return {
        **info,
        "supported": True,
        "family": passes[0].family,
        "native": {"width": passes[0].native[0], "height": passes[0].native[1]},
        "text": "; ".join(texts),
        "warnings": warnings,
        "passes": [p.as_dict() for p in passes],
    }


def _loaded_model() -> Any:
    from modules import sd_models

    return getattr(sd_models.model_data, "sd_model", None)


def _native_size() -> dict[str, Any]:
    return native_size_info(_loaded_model())


def _schedule(
    width: str | None = None,
    height: str | None = None,
    steps: str | None = None,
    sampler: str | None = None,
    denoising: str | None = None,
    enable_hr: str | None = None,
    hr_scale: str | None = None,
    hr_resize_x: str | None = None,
    hr_resize_y: str | None = None,
    hr_steps: str | None = None,
    hr_sampler: str | None = None,
    family: str | None = None,
    enabled: str | None = None,
    preset: str | None = None,
    raunet: str | None = None,
    mswmsa: str | None = None,
    custom_timing: str | None = None,
    t1: str | None = None,
    t2: str | None = None,
    aggressive: str | None = None,
    time_mode: str | None = None,
    msw_start: str | None = None,
    msw_end: str | None = None,
    hires: str | None = None,
) -> dict[str, Any]:
    """GET /hidiffusion/schedule: FastAPI reads the query parameters from this signature.

    Every parameter is text, checked by ``schedule_info``: a bad value gets the documented
    ``{"supported": false, "error": ...}`` line, never FastAPI's own 422 answer.
    """
    return schedule_info(_loaded_model(), dict(locals()))


def add_route(demo: Any, app: Any) -> None:
    """on_app_started: register the GET routes (they read the model already loaded, never load one)."""
    for path, endpoint in ((ROUTE, _native_size), (SCHEDULE_ROUTE, _schedule)):
        if not any(getattr(r, "path", None) == path for r in getattr(app, "routes", [])):
            app.add_api_route(path, endpoint, methods=["GET"])
