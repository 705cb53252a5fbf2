"""SD.Next's script arguments in the API (modules/api/script.py@058a7f0c:8-101).

An always-on script is named by its title, case-insensitively; unknown -> 422 "Always on script not
found". Its ``args`` are copied over the defaults (which come from calling each ``ui()`` again)
*and* stored in ``p.per_script_args[title]`` as given, which the script runner prefers: the script
receives the request's list as is.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules.api import HTTPException


def script_name_to_index(name: str, scripts_list: list) -> int | None:
    if not name or name == "none":
        return None
    available = [s.title().lower() for s in scripts_list]
    return available.index(name.lower()) if name.lower() in available else None


def get_script(script_name: str, script_runner: Any) -> Any:
    idx = script_name_to_index(script_name, script_runner.scripts)
    return None if idx is None else script_runner.scripts[idx]


def init_default_script_args(script_runner: Any) -> list:
    last = max([1, *(s.args_to for s in script_runner.scripts)])
    script_args: list = [None] * last
    script_args[0] = 0
    with gr.Blocks():
        for script in script_runner.scripts:
            if script.ui(script.is_img2img):
                script_args[script.args_from : script.args_to] = [
                    c.value for c in script.ui(script.is_img2img)
                ]
    return script_args


def init_script_args(
    p: Any,
    request: Any,
    default_script_args: list,
    selectable_scripts: Any,
    selectable_script_idx: Any,
    script_runner: Any,
) -> list:
    script_args = list(default_script_args)
    for name, payload in (request.alwayson_scripts or {}).items():
        script = get_script(name, script_runner)
        if script is None:
            raise HTTPException(status_code=422, detail=f"Always on script not found: {name}")
        if not script.alwayson:
            raise HTTPException(
                status_code=422, detail=f"Selectable script cannot be in always on params: {name}"
            )
        if "args" in payload:
            args = payload["args"]
            for i in range(min(script.args_to - script.args_from, len(args))):
                script_args[script.args_from + i] = args[i]
            p.per_script_args[script.title()] = args
    return script_args
