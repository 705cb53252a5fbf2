"""A fake of ComfyUI's ``comfy`` package at Comfy-Org/ComfyUI a125cd84 (v0.3.64), reduced to the code
paths the node pack meets: the ModelPatcher wrapper API, the sampling loop from the sampler nodes
down to ``UNetModel.forward``, and its ``transformer_options``. Written for the tests; each module
cites the upstream lines it mirrors."""
