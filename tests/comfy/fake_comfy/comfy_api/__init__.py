"""comfy_api (a125cd84), reduced to what the V3 node schema needs: ``latest`` (io, ComfyExtension)
and ``internal`` (the base classes execution.py tells V3 nodes and outputs apart by)."""
