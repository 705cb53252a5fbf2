"""SD.Next's paste (modules/generation_parameters_copypaste.py@058a7f0c), the parts an extension meets.

* ``add_paste_fields`` (:89-134): a tab's (component, key) list; string keys go into ``field_names``
  and, with the component's label and elem_id, into ``param_aliases`` (callable keys are skipped).
* ``should_skip(param)`` (:170-190): the "skip params" setting (``opts.disable_apply_params``, plus
  "clip skip" when ``clip_skip_enabled`` is off), expanded with the aliases; it calls
  ``param.lower()`` (:182), so it takes a string only.
* ``paste_values(text, fields)`` is the paste button's handler, ``paste_func`` (:272-327), as a
  function: parse, ``infotext_pasted_callback(text, params)`` (:284), then per (component, key):
  a callable key gets ``params``, a string key ``params.get(key)`` (:289-292); None: no update
  (:293-294); a ``gr.update`` dict is used as it is (:295-297); anything else -- whatever the key
  -- goes through the empty-prompt check (:299-303) and ``should_skip(key)`` (:304-308), then is
  converted: bool components ``str(v).lower() != "false"``, list values split on commas, others
  ``type(component.value)(v)`` (float when the component has a float ``step``) (:309-321); a
  conversion error is logged and the field left alone (:322-324). An exception anywhere else
  (``should_skip`` on a function key) ends the handler: nothing at all is restored.
"""

from __future__ import annotations

from typing import Any

from modules import script_callbacks, shared
from modules.infotext import mapping, parse  # noqa: F401
from modules.logger import log

parse_generation_parameters = parse
infotext_to_setting_name_mapping = mapping
type_of_gr_update = dict  # type(gr.update()) in gradio 3.43 (:12)

paste_fields: dict[str, dict] = {}
field_names: dict[str, list[str]] = {}
param_aliases: dict[str, str] = {}


def reset() -> None:
    paste_fields.clear()
    field_names.clear()
    param_aliases.clear()


def add_paste_fields(
    tabname: str, init_img: Any, fields: list[tuple[Any, Any]] | None, override_settings_component: Any = None
) -> None:
    paste_fields[tabname] = {
        "init_img": init_img,
        "fields": fields,
        "override_settings_component": override_settings_component,
    }
    field_names[tabname] = [f[1] for f in fields if f[1] is not None and not callable(f[1])] if fields else []
    for component, name in fields or []:
        if name is None or callable(name):
            continue
        lower = name.lower()
        label = getattr(component, "label", None)
        if isinstance(label, str) and label.lower() != lower and label.lower() not in param_aliases:
            param_aliases[label.lower()] = lower
        elem_id = getattr(component, "elem_id", None)
        if isinstance(elem_id, str):
            var = elem_id
            for prefix in ("txt2img_", "img2img_", "control_", "video_", "extras_"):
                if var.startswith(prefix):
                    var = var[len(prefix) :]
                    break
            if var.lower() != lower and var.lower() not in param_aliases:
                param_aliases[var.lower()] = lower


def get_all_fields() -> list[str]:
    out: list[str] = []
    for names in field_names.values():
        for name in names:
            name = name.replace("-1", "").replace("-2", "").lower()
            if name not in out:
                out.append(name)
    return out


def should_skip(param: str) -> bool:
    skip_params = [p.strip().lower() for p in shared.opts.disable_apply_params.split(",")]
    if not shared.opts.clip_skip_enabled:
        skip_params += ["clip skip"]
    expanded = set(skip_params)
    for skip in skip_params:
        if skip in param_aliases:
            expanded.add(param_aliases[skip])
    param_lower = param.lower()  # :182 -- AttributeError for a function key
    normalized = param_lower.replace("-1", "").replace("-2", "")
    get_all_fields()  # :186-187, for SD.Next's debug line
    return param_lower in expanded or normalized in expanded


def paste_values(prompt: str, fields: list[tuple[Any, Any]]) -> tuple[dict[str, Any], list[Any]]:
    """(params after the callbacks, one value per field -- None for "left as it is").

    Raises what SD.Next's handler raises (then the browser gets an error and no field changes).
    """
    params = parse(prompt)
    script_callbacks.infotext_pasted_callback(prompt, params)
    values: list[Any] = []
    for component, key in fields:
        v = key(params) if callable(key) else params.get(key, None)
        if v is None:
            values.append(None)
        elif isinstance(v, type_of_gr_update):
            values.append(v.get("value"))
        else:
            if isinstance(v, str) and v.strip() == "" and key in {"Prompt", "Negative prompt"}:
                values.append(None)
                continue
            if should_skip(key):
                values.append(None)
                continue
            try:
                valtype = type(component.value)
                if hasattr(component, "step") and type(component.step) is float:
                    valtype = float
                if valtype is bool:
                    val = str(v).lower() != "false"
                elif valtype is list:
                    val = v if isinstance(v, list) else [item.strip() for item in v.split(",")]
                else:
                    val = valtype(v)
                values.append(val)
            except Exception as e:
                log.error(f'Paste param: key="{key}" value="{v}" error="{e}"')
                values.append(None)
    return params, values
