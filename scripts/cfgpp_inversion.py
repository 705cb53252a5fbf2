"""CFG++ inversion for img2img editing: the "CFG++ inversion" accordion (an AlwaysOn script).

Glue only; the logic lives in lib_hidiff/webui/inversion*.py. Shown in img2img on the WebUIs the
inversion supports (``Host.cfgpp_inversion`` of the host adapter); callbacks are registered here,
because "Reload UI" clears callbacks and re-runs script files.
"""

from modules import script_callbacks, scripts

from lib_hidiff.webui import hosts, inversion, inversion_ui

ACTIVE = hosts.active() and inversion.supported() is None


class CfgppInversionScript(scripts.Script):
    def __init__(self):
        super().__init__()
        # The init image exists before the scripts' UI; the PNG-info button reads it (A1111 1.6+).
        if ACTIVE and hasattr(self, "on_after_component"):
            self.on_after_component(self._init_image, elem_id=inversion_ui.INIT_IMAGE_ELEM_ID)

    def title(self):
        return "CFG++ inversion"

    def show(self, is_img2img):
        return scripts.AlwaysVisible if ACTIVE and is_img2img else False

    def ui(self, is_img2img):
        components, self.infotext_fields, self.paste_field_names = inversion_ui.build(self, is_img2img)
        return components

    def _init_image(self, component):
        self.cfgpp_inversion_image = component.component
        inversion_ui.wire_image_button(self)

    def after_component(self, component, **kwargs):
        # SD.Next's Script has no on_after_component: its runner calls this for every component
        # (scripts_manager.py:776-790@058a7f0c); on A1111 the callback above got there first.
        if ACTIVE and kwargs.get("elem_id") == inversion_ui.INIT_IMAGE_ELEM_ID:
            if getattr(self, "cfgpp_inversion_image", None) is None:
                self.cfgpp_inversion_image = component
                inversion_ui.wire_image_button(self)

    def process(self, p, *args):
        inversion.process(p, args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        inversion.before_sampling(p, kwargs.get("noise"), kwargs.get("uc"))


if ACTIVE:
    script_callbacks.on_before_ui(inversion_ui.add_axes)
