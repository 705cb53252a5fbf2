"""ComfyUI custom-node entry point of sd-webui-hidiffusion (ComfyUI imports this file; the WebUIs never do).

ComfyUI loads ``custom_nodes/<this folder>/__init__.py`` as a package of its own name
(nodes.py:2111-2131 at a125cd84) and registers ``NODE_CLASS_MAPPINGS`` (nodes.py:2160-2166). The
library imports itself as the top-level package ``lib_hidiff``, so this folder goes on ``sys.path``
first. Nothing else happens at import: ComfyUI's own modules are imported by the nodes when they run.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from lib_hidiff.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
