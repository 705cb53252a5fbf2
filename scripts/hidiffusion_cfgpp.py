"""CFG++ samplers in the WebUI's sampler dropdowns, API and XYZ plot, on every host.

Registered at import -- before the UI builds its dropdowns, and under --nowebui too. Glue only;
the shared logic lives in lib_hidiff/webui/samplers.py, the host's way in its adapter.
"""

from modules import script_callbacks, scripts

from lib_hidiff.webui import hosts, samplers, settings

ACTIVE = hosts.active()

if ACTIVE:
    samplers.register()


class CfgppInfotextScript(scripts.Script):
    """No UI: clears the CFG++ infotext keys an earlier XYZ cell left in the shared dict."""

    create_group = False

    def title(self):
        return "CFG++ samplers"

    def show(self, is_img2img):
        return scripts.AlwaysVisible if ACTIVE else False

    def ui(self, is_img2img):
        return []

    def process(self, p, *args):
        samplers.remove_infotext(p.extra_generation_params)


if ACTIVE:
    script_callbacks.on_infotext_pasted(samplers.on_infotext_pasted)
    script_callbacks.on_ui_settings(settings.add_cfgpp_options)
    script_callbacks.on_script_unloaded(samplers.unregister)
