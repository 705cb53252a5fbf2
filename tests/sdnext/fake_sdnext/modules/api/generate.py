"""txt2img / img2img over the API (modules/api/generate.py@058a7f0c:87-175), reduced.

The sampler name is validated (404), the request's always-on script args are applied
(api/script.py), the processing object is built from the request's fields and run.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from modules import processing, scripts_manager, shared
from modules.api import helpers, script

_defaults: dict[str, list] = {}


def _run(runner: Any, cls: type, request: dict[str, Any]) -> Any:
    request = dict(request)
    alwayson = request.pop("alwayson_scripts", None) or {}
    if "sampler_name" in request:
        request["sampler_name"] = helpers.validate_sampler_name(request["sampler_name"])
    if runner.name not in _defaults:
        _defaults[runner.name] = script.init_default_script_args(runner)
    p = cls(sd_model=shared.sd_model, **request)
    p.scripts = runner
    args = script.init_script_args(
        p, SimpleNamespace(alwayson_scripts=alwayson), _defaults[runner.name], None, None, runner
    )
    p.script_args = tuple(args)
    processed = processing.process_images(p)
    p.close()
    return p, processed


def post_text2img(request: dict[str, Any]) -> Any:
    return _run(scripts_manager.scripts_txt2img, processing.StableDiffusionProcessingTxt2Img, request)


def post_img2img(request: dict[str, Any]) -> Any:
    return _run(scripts_manager.scripts_img2img, processing.StableDiffusionProcessingImg2Img, request)


def reset() -> None:
    _defaults.clear()
