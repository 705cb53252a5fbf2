"""The example workflows in docs/comfyui (API format, as ComfyUI's /prompt takes them) fit the nodes,
classic and V3 registration alike: our nodes get every required input with an allowed value; links
point at existing nodes; the inversion's seed is the edit sampler's noise_seed."""

from __future__ import annotations

import json
import os

import pytest

from lib_hidiff.comfy.nodes import NODE_CLASS_MAPPINGS
from lib_hidiff.comfy.nodes_v3 import NODES

DOCS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "comfyui"
)
WORKFLOWS = sorted(f for f in os.listdir(DOCS) if f.endswith(".json"))


V3 = {cls.GET_SCHEMA().node_id: cls for cls in NODES}


@pytest.mark.parametrize("api", ["classic", "v3"])
@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_fits_the_nodes(name, api):
    mappings = NODE_CLASS_MAPPINGS if api == "classic" else V3
    graph = json.load(open(os.path.join(DOCS, name), encoding="utf-8"))
    ours = 0
    for node in graph.values():
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [node id, output index]
                assert value[0] in graph and isinstance(value[1], int)
        cls = mappings.get(node["class_type"])
        if cls is None:
            continue
        ours += 1
        required = cls.INPUT_TYPES()["required"]
        assert set(required) == set(node["inputs"]), node["class_type"]
        for key, (kind, *opts) in required.items():
            value = node["inputs"][key]
            options = opts[0] if opts else {}
            if kind == "COMBO":  # V3 combos (comfy_api/latest/_io.py:333-384 at a125cd84)
                kind = options["options"]
            if isinstance(kind, list):
                assert value in kind, key
            elif kind in ("FLOAT", "INT"):
                assert options.get("min", value) <= value <= options.get("max", value), key
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), key
            else:
                assert isinstance(value, list), key  # MODEL, LATENT, ... come through links
    assert ours >= 1
    for node in graph.values():
        if node["class_type"] == "CFGppInversion":  # HiDiffusion MODELs need the same seed (README)
            edits = [
                n
                for n in graph.values()
                if n["inputs"].get("latent_image", [None])[0] in graph
                and graph[n["inputs"]["latent_image"][0]] is node
            ]
            assert edits and all(n["inputs"]["noise_seed"] == node["inputs"]["seed"] for n in edits)
    if any(n["class_type"] == "KSamplerSelect" for n in graph.values()):
        # the edit samples with ComfyUI's own Euler CFG++ (comfy/samplers.py:730 at a125cd84)
        assert {
            n["inputs"]["sampler_name"] for n in graph.values() if n["class_type"] == "KSamplerSelect"
        } == {"euler_cfg_pp"}
