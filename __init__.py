"""ComfyUI custom-node entry point of sd-webui-hidiffusion (ComfyUI imports this file; the WebUIs never do).

ComfyUI loads ``custom_nodes/<this folder>/__init__.py`` as a package of its own name
(nodes.py:2111-2131 at a125cd84). It registers the folder's ``NODE_CLASS_MAPPINGS`` if the module has
them and only otherwise calls the V3 ``comfy_entrypoint`` (nodes.py:2157-2196). So this file exports
exactly one of the two: ``comfy_entrypoint`` (the V3 schema, :mod:`lib_hidiff.comfy.nodes_v3`) where
``comfy_api.latest`` offers ``io`` and ``ComfyExtension`` -- the commit that added them also added the
loader's V3 branch -- and the classic ``NODE_CLASS_MAPPINGS`` (:mod:`lib_hidiff.comfy.nodes`) on an
older ComfyUI. Same node ids, inputs and code either way; nothing is registered twice.

The library imports itself as the top-level package ``lib_hidiff``, so this folder goes on
``sys.path`` first. Nothing else happens at import: ComfyUI's ``comfy`` modules are imported by the
nodes when they run.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

try:
    from comfy_api.latest import ComfyExtension, io  # noqa: F401  (ComfyUI with the V3 schema)
except ImportError:
    from lib_hidiff.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
else:
    from lib_hidiff.comfy.nodes_v3 import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
