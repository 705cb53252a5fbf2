"""The same four nodes in ComfyUI's V3 schema (``comfy_api.latest``: ``io.ComfyNode``, ``io.Schema``,
``ComfyExtension`` + ``comfy_entrypoint``), the API most of comfy_extras uses at a125cd84 (for example
comfy_extras/nodes_model_downscale.py, a MODEL -> MODEL patch like HiDiffusion).

Importing this module imports ``comfy_api.latest``: only the repository's ``__init__.py`` does, and
only when that import works (ComfyUI from 4887743a, 2025-07-31, on: the same commit added
``comfy_api.latest``'s ``io`` / ``ComfyExtension`` and nodes.py's ``comfy_entrypoint`` loader).

Each node's schema is built from its classic class in :mod:`.nodes` (same node id, display name,
category, description, inputs with the same names, defaults, ranges and tooltips, same outputs), and
``execute`` runs that class's function: one implementation, two registrations, so an API-format
workflow (docs/comfyui/*_api.json) runs unchanged on either.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import ComfyExtension, io

from . import nodes as v1

__all__ = ["NODES", "HiDiffusionExtension", "comfy_entrypoint"]

# classic type name -> V3 io type (the ones these nodes use; comfy_api/latest/_io.py at a125cd84)
_IO_TYPES: dict[str, Any] = {
    "MODEL": io.Model,
    "CONDITIONING": io.Conditioning,
    "LATENT": io.Latent,
    "SIGMAS": io.Sigmas,
    "NOISE": io.Noise,
    "SAMPLER": io.Sampler,
    "BOOLEAN": io.Boolean,
    "INT": io.Int,
    "FLOAT": io.Float,
}

# classic widget options -> V3 Input keyword (the rest have the same name)
_RENAMED = {"display": "display_mode"}


def _input(name: str, spec: tuple) -> Any:
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    options = {_RENAMED.get(k, k): v for k, v in options.items()}
    if isinstance(kind, (list, tuple)):
        return io.Combo.Input(name, options=list(kind), **options)
    return _IO_TYPES[kind].Input(name, **options)


def _schema(node_id: str, cls: type) -> Any:
    required = cls.INPUT_TYPES()["required"]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return io.Schema(
        node_id=node_id,
        display_name=v1.NODE_DISPLAY_NAME_MAPPINGS[node_id],
        category=cls.CATEGORY,
        description=getattr(cls, "DESCRIPTION", None) or (cls.__doc__ or "").strip(),
        inputs=[_input(name, spec) for name, spec in required.items()],
        outputs=[
            _IO_TYPES[kind].Output(display_name=name if name != kind else None)
            for kind, name in zip(cls.RETURN_TYPES, names)
        ],
    )


def _run(node_id: str, **inputs: Any) -> Any:
    cls = v1.NODE_CLASS_MAPPINGS[node_id]
    return io.NodeOutput(*getattr(cls(), cls.FUNCTION)(**inputs))


class HiDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return _schema("HiDiffusion_lib_hidiff", v1.HiDiffusion)

    @classmethod
    def execute(cls, **inputs: Any) -> Any:
        return _run("HiDiffusion_lib_hidiff", **inputs)


class CFGppInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return _schema("CFGppInversion", v1.CFGppInversion)

    @classmethod
    def execute(cls, **inputs: Any) -> Any:
        return _run("CFGppInversion", **inputs)


class SamplerDDIMCFGpp(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return _schema("SamplerDDIMCFGPP", v1.SamplerDDIMCFGpp)

    @classmethod
    def execute(cls, **inputs: Any) -> Any:
        return _run("SamplerDDIMCFGPP", **inputs)


class SamplerDPMPPSDECFGpp(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return _schema("SamplerDPMPP_SDE_CFGPP", v1.SamplerDPMPPSDECFGpp)

    @classmethod
    def execute(cls, **inputs: Any) -> Any:
        return _run("SamplerDPMPP_SDE_CFGPP", **inputs)


NODES: list[type] = [HiDiffusion, CFGppInversion, SamplerDDIMCFGpp, SamplerDPMPPSDECFGpp]


class HiDiffusionExtension(ComfyExtension):
    async def get_node_list(self) -> list[type]:
        return list(NODES)


async def comfy_entrypoint() -> HiDiffusionExtension:
    return HiDiffusionExtension()
