"""SD.Next's paste (modules/generation_parameters_copypaste.py@058a7f0c:270-351), as a function.

``paste_values(text, fields)`` does what the paste button's handler does: parse, fire
``infotext_pasted_callback(text, params)`` (extensions may repair ``params`` there), then for each
(component, key) field: a callable key gets ``params``, a string key ``params.get(key)``; None
means "no update"; bool components take ``str(v).lower() != "false"``, others
``type(component.value)(v)`` (float when the component has a float ``step``).
"""

from __future__ import annotations

from typing import Any

from modules import script_callbacks
from modules.infotext import mapping, parse  # noqa: F401

parse_generation_parameters = parse
infotext_to_setting_name_mapping = mapping


def paste_values(prompt: str, fields: list[tuple[Any, Any]]) -> tuple[dict[str, Any], list[Any]]:
    """(params after the callbacks, one value per field -- None for "left as it is")."""
    params = parse(prompt)
    script_callbacks.infotext_pasted_callback(prompt, params)
    values = []
    for component, key in fields:
        v = key(params) if callable(key) else params.get(key)
        if v is None or isinstance(v, dict):  # dict: a gr.update() from a callable
            values.append(None if v is None else v.get("value"))
            continue
        valtype = type(getattr(component, "value", None))
        if isinstance(getattr(component, "step", None), float):
            valtype = float
        if valtype is bool:
            values.append(str(v).lower() != "false")
        elif valtype is type(None):
            values.append(v)
        else:
            values.append(valtype(v))
    return params, values
