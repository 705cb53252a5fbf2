"""The example workflows in docs/comfyui (API format, as ComfyUI's /prompt takes them) fit the nodes:
our nodes get every required input with an allowed value; links point at existing nodes."""

from __future__ import annotations

import json
import os

import pytest

from lib_hidiff.comfy.nodes import NODE_CLASS_MAPPINGS

DOCS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "comfyui"
)
WORKFLOWS = sorted(f for f in os.listdir(DOCS) if f.endswith(".json"))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_fits_the_nodes(name):
    graph = json.load(open(os.path.join(DOCS, name), encoding="utf-8"))
    ours = 0
    for node in graph.values():
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [node id, output index]
                assert value[0] in graph and isinstance(value[1], int)
        cls = NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls is None:
            continue
        ours += 1
        required = cls.INPUT_TYPES()["required"]
        assert set(required) == set(node["inputs"]), node["class_type"]
        for key, (kind, *opts) in required.items():
            value = node["inputs"][key]
            options = opts[0] if opts else {}
            if isinstance(kind, list):
                assert value in kind, key
            elif kind in ("FLOAT", "INT"):
                assert options.get("min", value) <= value <= options.get("max", value), key
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), key
            else:
                assert isinstance(value, list), key  # MODEL, LATENT, ... come through links
    assert ours >= 1
    if any(n["class_type"] == "KSamplerSelect" for n in graph.values()):
        # the edit samples with ComfyUI's own Euler CFG++ (comfy/samplers.py:730 at a125cd84)
        assert {
            n["inputs"]["sampler_name"] for n in graph.values() if n["class_type"] == "KSamplerSelect"
        } == {"euler_cfg_pp"}
