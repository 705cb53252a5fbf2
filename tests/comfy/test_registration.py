"""How ComfyUI (a125cd84) registers the repository: through the V3 ``comfy_entrypoint`` where
``comfy_api.latest`` exists, through the classic NODE_CLASS_MAPPINGS on an older ComfyUI (no
``comfy_api``), never both; the same node ids, inputs and outputs either way, and the V3 nodes run the
same code as the classic ones through the fake execution.py."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys

import execution
import nodes
import pytest
import torch
from comfy_api.latest import io

from lib_hidiff.comfy import nodes as v1
from lib_hidiff.comfy import nodes_v3

from .comfy_env import ClosedFormUNet, comfy_model, conditioning, latent, ldm_sd15_unet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IDS = {"HiDiffusion_lib_hidiff", "CFGppInversion", "SamplerDDIMCFGPP", "SamplerDPMPP_SDE_CFGPP"}


@pytest.fixture
def registry(monkeypatch):
    """ComfyUI's node registry, emptied for one load."""
    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", {})
    monkeypatch.setattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", {})
    yield nodes
    sys.modules.pop(REPO.replace(".", "_x_"), None)


def _classic_inputs(cls: type) -> dict:
    """INPUT_TYPES()["required"] with combos written the classic way (a list of options)."""
    out = {}
    for name, (kind, *opts) in cls.INPUT_TYPES()["required"].items():
        options = dict(opts[0]) if opts else {}
        if kind == "COMBO":
            kind = options.pop("options")
            options.pop("multiselect", None)
        out[name] = (kind, options)
    return out


def test_comfyui_with_the_v3_schema_loads_the_v3_nodes_only(registry):
    assert asyncio.run(registry.load_custom_node(REPO))
    module = sys.modules[REPO.replace(".", "_x_")]
    assert getattr(module, "NODE_CLASS_MAPPINGS", None) is None  # else the V1 branch would win
    assert set(registry.NODE_CLASS_MAPPINGS) == IDS
    for node_id, cls in registry.NODE_CLASS_MAPPINGS.items():
        classic = v1.NODE_CLASS_MAPPINGS[node_id]
        assert issubclass(cls, io.ComfyNode) and cls in nodes_v3.NODES
        assert registry.NODE_DISPLAY_NAME_MAPPINGS[node_id] == v1.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert _classic_inputs(cls) == _classic_inputs(classic), node_id
        assert list(cls.RETURN_TYPES) == list(classic.RETURN_TYPES)
        assert list(cls.RETURN_NAMES) == list(getattr(classic, "RETURN_NAMES", classic.RETURN_TYPES))
        assert cls.CATEGORY == classic.CATEGORY
        assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{os.path.basename(REPO)}"


def test_older_comfyui_without_comfy_api_loads_the_classic_nodes(registry, monkeypatch):
    for name in [m for m in sys.modules if m == "comfy_api" or m.startswith("comfy_api.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import comfy_api... -> ImportError
    assert asyncio.run(registry.load_custom_node(REPO))
    module = sys.modules[REPO.replace(".", "_x_")]
    assert not hasattr(module, "comfy_entrypoint")
    assert registry.NODE_CLASS_MAPPINGS == v1.NODE_CLASS_MAPPINGS
    assert registry.NODE_DISPLAY_NAME_MAPPINGS == v1.NODE_DISPLAY_NAME_MAPPINGS


def test_library_imports_without_comfyui(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "comfy_extras")]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("lib_hidiff.comfy.nodes", "lib_hidiff.comfy.hidiffusion", "lib_hidiff.comfy.samplers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)
    monkeypatch.delitem(sys.modules, "lib_hidiff.comfy.nodes_v3", raising=False)
    with pytest.raises(ImportError):
        importlib.import_module("lib_hidiff.comfy.nodes_v3")


def _run(node_id: str, **inputs):
    return asyncio.run(execution.get_output_data(nodes_v3_class(node_id), inputs))


def nodes_v3_class(node_id: str) -> type:
    return next(c for c in nodes_v3.NODES if c.GET_SCHEMA().node_id == node_id)


def test_v3_hidiffusion_node_runs_the_same_patch():
    from comfy.ldm.modules.diffusionmodules.openaimodel import from_ldm

    model = comfy_model(from_ldm(ldm_sd15_unet()).eval())
    (patched,) = _run("HiDiffusion_lib_hidiff", model=model, **_defaults(v1.HiDiffusion, "model"))
    (classic,) = v1.HiDiffusion().patch(model)
    assert patched is not model
    x = [
        nodes.common_ksampler(
            m, 3, 1, 5.0, "euler", "normal", conditioning(1), conditioning(2), latent(72, 64)
        )
        for m in (patched, classic, model)
    ]
    x = [out[0]["samples"] for out in x]
    assert torch.equal(x[0], x[1]) and not torch.equal(x[0], x[2])  # the same HiDiffusion, and it acts


def _defaults(cls: type, *links: str) -> dict:
    return {
        name: opts[0]["default"]
        for name, (kind, *opts) in cls.INPUT_TYPES()["required"].items()
        if name not in links and opts and "default" in opts[0]
    }


def test_v3_sampler_and_inversion_nodes_return_what_the_classic_ones_do():
    (ddim,) = _run("SamplerDDIMCFGPP", eta=0.0, s_noise=1.0)
    (sde,) = _run("SamplerDPMPP_SDE_CFGPP", eta=1.0, s_noise=1.0, r=0.5)
    assert ddim.sampler_function is v1.SamplerDDIMCFGpp().get_sampler(0.0, 1.0)[0].sampler_function
    assert sde.extra_options == {"eta": 1.0, "s_noise": 1.0, "r": 0.5}
    from comfy_extras.nodes_custom_sampler import BasicScheduler

    model = comfy_model(ClosedFormUNet())
    sigmas = BasicScheduler().get_sigmas(model, "normal", 6, 1.0)[0]
    args = dict(
        model=model,
        positive=conditioning(1),
        negative=conditioning(2),
        latent_image=latent(4, 4),
        sigmas=sigmas,
        cfg=0.8,
        iterations=1,
        seed=5,
    )
    inverted, noise = _run("CFGppInversion", **args)
    classic, classic_noise = v1.CFGppInversion().invert(**args)
    assert torch.equal(inverted["samples"], classic["samples"]) and noise.seed == classic_noise.seed == 5
