"""SD.Next's extra networks (modules/extra_networks.py@058a7f0c:84-190), reduced to one kind.

``parse_prompts`` takes ``<name:args>`` tags out of the prompts (:160-190); ``activate_filtered``
(:124-130) runs before the prompt is encoded, once per pass (processing_diffusers.py:150-151), and
``deactivate`` (:133-157) after the passes (processing_diffusers.py:647). The fake's one network,
``<lora:NAME:WEIGHT>``, changes the UNet while active (its ``conv_out`` bias moves by WEIGHT · 0.01
in a direction fixed by NAME) and puts the original bias back on deactivate.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from typing import Any

import torch

from modules import shared

re_extra_net = re.compile(r"<(\w+):([^>]+)>")
_saved: dict[int, torch.Tensor] = {}  # id(unet) -> the conv_out bias before activation


def parse_prompt(prompt: str | None) -> tuple[str, defaultdict]:
    found: defaultdict = defaultdict(list)
    if prompt is None:
        return "", found

    def take(m: re.Match) -> str:
        found[m.group(1)].append(m.group(2).split(":"))
        return ""

    return re_extra_net.sub(take, prompt), found


def parse_prompts(prompts: list[str], extra_data: Any = None) -> tuple[list[str], defaultdict]:
    updated, data = [], extra_data or defaultdict(list)
    for prompt in prompts:
        text, parsed = parse_prompt(prompt)
        if parsed:
            data = parsed
        updated.append(text)
    return updated, data


def activate_filtered(p: Any, extra_network_data: Any = None, step: int = 0) -> None:
    data = extra_network_data or p.network_data or {}
    unet = getattr(shared.sd_model, "unet", None)
    if unet is None or not data.get("lora"):
        return
    bias = unet.conv_out.bias
    if id(unet) not in _saved:
        _saved[id(unet)] = bias.detach().clone()
    delta = torch.zeros_like(bias)
    for name, *rest in data["lora"]:
        weight = float(rest[0]) if rest else 1.0
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        delta += weight * 0.01 * torch.randn(bias.shape, generator=g)
    with torch.no_grad():
        bias.copy_(_saved[id(unet)] + delta)
    p.network_data = data


def deactivate(p: Any, extra_network_data: Any = None, force: Any = None) -> None:
    unet = getattr(shared.sd_model, "unet", None)
    if unet is not None and id(unet) in _saved:
        with torch.no_grad():
            unet.conv_out.bias.copy_(_saved.pop(id(unet)))
