"""modules.infotext_utils: quoting, parsing, PasteField, and what the paste button computes."""

from __future__ import annotations

import json
import re

from modules import errors, script_callbacks, shared

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


class PasteField(tuple):
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str) -> dict:
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    res = {}
    for k, v in re_param.findall(lastline):
        v = unquote(v) if v[:1] == '"' and v[-1:] == '"' else v
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"], res[f"{k}-2"] = m.group(1), m.group(2)
        else:
            res[k] = v
    prompt = [line for line in lines if not line.startswith("Negative prompt:")]
    res["Prompt"] = "\n".join(prompt)
    return res


def get_override_settings(params):
    res = []
    for setting_name, info in shared.opts.data_labels.items():
        if not info.infotext or params.get(info.infotext) is None:
            continue
        v = shared.opts.cast_value(setting_name, params[info.infotext])
        if v != getattr(shared.opts, setting_name, None):
            res.append((info.infotext, setting_name, v))
    return res


type_of_gr_update = dict  # type(gr.update()) in gradio 3.41 and 4.x (infotext_utils.py@1.10.1:20)


def paste_values(prompt: str, paste_fields) -> tuple[dict, list]:
    """The paste button, ``connect_paste.paste_func`` (infotext_utils.py@1.10.1:476-519) as a function.

    Parse, run the infotext_pasted callbacks (:486-487), then per (component, key): a callable key
    gets ``params`` (an exception is reported and counts as None, :491-496), a string key
    ``params.get(key)`` (:498); None: no update (:500-501); a ``gr.update`` dict is used as it is
    (:502-503); anything else is converted with the type of the component's current value -- bool
    components take "False" as False, int components ``float(v)`` -- and a conversion error leaves
    the component alone (:504-517). Returns (params, values); a value of None means "left as it is",
    a ``gr.update`` gives its "value".
    """
    params = parse_generation_parameters(prompt)
    script_callbacks.infotext_pasted_callback(prompt, params)
    values = []
    for component, key in paste_fields:
        if callable(key):
            try:
                v = key(params)
            except Exception:
                errors.report(f"Error executing {key}", exc_info=True)
                v = None
        else:
            v = params.get(key, None)
        if v is None:
            values.append(None)
        elif isinstance(v, type_of_gr_update):
            values.append(v.get("value"))
        else:
            try:
                valtype = type(component.value)
                if valtype is bool and v == "False":
                    val = False
                elif valtype is int:
                    val = float(v)
                else:
                    val = valtype(v)
                values.append(val)
            except Exception:
                values.append(None)
    return params, values
