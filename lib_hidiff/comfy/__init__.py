"""sd-webui-hidiffusion in ComfyUI: HiDiffusion, CFG++ inversion and CFG++ samplers as custom nodes.

Beside the WebUI glue, never importing it (lib_hidiff.webui); it uses the core (lib_hidiff.unet,
lib_hidiff.cfgpp) and imports ComfyUI's ``comfy`` only inside functions. The repository root's
``__init__.py`` exports :data:`.nodes.NODE_CLASS_MAPPINGS` to ComfyUI.
"""
