"""SD.Next's infotext parser (modules/infotext.py@058a7f0c:13-92) and settings mapping (:95-128).

Behaviour that matters (written for these tests, same rules): a parameter key may contain only
word characters and spaces (infotext.py:13), so "HiDiffusion RAU-Net: True" is read as "Net: True";
values: JSON-quoted text is unquoted, digits become int/float, "True"/"False" become bool,
"WxH" adds "<key>-1"/"<key>-2".
"""

from __future__ import annotations

import json
import re
from typing import Any

_PARAM = re.compile(r'\s*([\w ]+):\s*("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_STARTS = ("steps: ", "seed: ", "width: ", "height: ", "sampler: ", "size: ", "cfg scale: ", "pipeline: ")


def quote(text: Any) -> Any:
    s = str(text)
    if "," not in s and "\n" not in s and ":" not in s:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str | None) -> str:
    if not text:
        return ""
    if text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse(infotext: str) -> dict[str, Any]:
    if not isinstance(infotext, str) or not infotext.strip():
        return {}
    text = infotext.replace("\nSteps:", " Steps:")
    lower = text.lower()
    starts = [lower.find(s) for s in _STARTS if s in lower]
    cut = min(starts) if starts else len(text)
    head, tail = text[:cut], text[cut:]
    prompt, _, negative = head.partition("Negative prompt:")
    params: dict[str, Any] = {k: v for k, v in _PARAM.findall(tail)}
    if not params:
        return {"Prompt": infotext}
    params["Prompt"] = prompt.strip() or None
    params["Negative prompt"] = negative.strip() or None
    for key, raw in list(params.items()):
        if key in ("Prompt", "Negative prompt") or not isinstance(raw, str):
            continue
        val = unquote(raw).strip(" ,\n")
        size = _SIZE.match(val)
        if val.replace(".", "", 1).isdigit():
            params[key] = float(val) if "." in val else int(val)
        elif val in ("True", "False"):
            params[key] = val == "True"
        elif size is not None:
            params[f"{key}-1"], params[f"{key}-2"] = int(size.group(1)), int(size.group(2))
        else:
            params[key] = val
    return params


mapping = [  # infotext key -> setting restored as an override (the only override source)
    ("Model", "sd_model_checkpoint"),
    ("VAE", "sd_vae"),
    ("Sampler timesteps", "schedulers_timesteps"),
    ("Sampler spacing", "schedulers_timestep_spacing"),
    ("Sampler sigma", "schedulers_sigma"),
    ("Sampler order", "schedulers_solver_order"),
    ("Sampler type", "schedulers_prediction_type"),
]
