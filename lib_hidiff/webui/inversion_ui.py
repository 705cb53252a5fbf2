"""The "CFG++ inversion" accordion (img2img), its PNG-info button and its XYZ axes.

``ui()`` runs more than once (the API calls it to read defaults): building has no side effects
besides the components. Labels key users' saved defaults (ui-config.json): keep them stable.
"""

from __future__ import annotations

from typing import Any

from . import inversion, inversion_infotext, paste, xyz
from .inversion_args import FIELDS, MAX_CFG, MAX_ITERATIONS

__all__ = ["AXES", "HINT", "TOOLTIPS", "add_axes", "build", "wire_image_button"]

INIT_IMAGE_ELEM_ID = "img2img_image"  # the img2img tab's image (A1111 1.10 modules/ui.py)

HINT = (
    "Inverts the init image with the <b>source prompt</b> to the noise level this denoising strength "
    "starts from (1.0: all the way), and samples from there with your prompt instead of init + random "
    "noise. Same prompt, <b>Euler CFG++</b> and the same CFG scale give the image back (exactly in "
    "the limit of refinement iterations); any other sampler starts from the same latent with no "
    "round-trip promise. Costs 1 model call per img2img step; refinement costs more (see its tooltip)."
)

TOOLTIPS = {
    "source_prompt": "What the init image shows (the prompt it was made with); empty = unconditional",
    "from_image": "Fill the source prompt from the init image's PNG info",
    "cfg_scale": "CFG scale of the inversion, mapped to λ like the CFG++ samplers; 0 = the CFG scale "
    "above (needed for an exact round trip)",
    "iterations": "Refines every inversion step so that Euler CFG++ retraces the image more exactly. 0 = the "
    "CFG++ paper's inversion, 1 model call per step. k > 0: up to k + 5 calls per step -- the plain "
    "inversion (1), the refined one (up to k + 2), and sampling each back once (2) to keep, per image, "
    "the refined latent only where it comes back closer: never worse than 0",
}


def build(script: Any, is_img2img: bool) -> tuple[list[Any], list[tuple[Any, Any]], list[str]]:
    """Create the components; return (components in FIELDS order, infotext_fields, paste_field_names)."""
    import gradio as gr
    from modules.ui_components import InputAccordion

    def eid(name: str) -> str:
        return script.elem_id(name)

    c: dict[str, Any] = {}
    with InputAccordion(False, label="CFG++ inversion", elem_id=eid("enabled")) as enabled:
        c["enabled"] = enabled
        gr.HTML(value=f"<p>{HINT}</p>", elem_id=eid("hint"))
        with gr.Row():
            c["source_prompt"] = gr.Textbox(
                label="Source prompt",
                value="",
                lines=2,
                placeholder="empty = unconditional",
                elem_id=eid("source_prompt"),
                tooltip=TOOLTIPS["source_prompt"],
            )
            script.cfgpp_inversion_button = gr.Button(
                value="From PNG info", elem_id=eid("from_image"), tooltip=TOOLTIPS["from_image"]
            )
        with gr.Row():
            c["cfg_scale"] = gr.Slider(
                label="Inversion CFG scale (0 = same)",
                minimum=0.0,
                maximum=MAX_CFG,
                step=0.5,
                value=0.0,
                elem_id=eid("cfg_scale"),
                tooltip=TOOLTIPS["cfg_scale"],
            )
            c["iterations"] = gr.Slider(
                label="Refinement iterations",
                minimum=0,
                maximum=MAX_ITERATIONS,
                step=1,
                value=0,
                elem_id=eid("iterations"),
                tooltip=TOOLTIPS["iterations"],
            )
    script.cfgpp_inversion_source = c["source_prompt"]
    script._cfgpp_wired = False  # ui() runs again for the API: wire this build's button
    wire_image_button(script)
    components = [c[f.name] for f in FIELDS]
    # Functions only (no keys): the accordion exists in img2img alone, and a key would join the
    # tab-to-tab "Send to" copy, which pairs named fields by position (paste.py).
    readers = [inversion_infotext.paste_value(f.name) for f in FIELDS]
    return components, paste.fields(components, readers), list(inversion_infotext.PASTE_KEYS)


def wire_image_button(script: Any) -> bool:
    """Connect the PNG-info button to the init image once both exist (either may come first)."""
    button = getattr(script, "cfgpp_inversion_button", None)
    image = getattr(script, "cfgpp_inversion_image", None)
    source = getattr(script, "cfgpp_inversion_source", None)
    if button is None or image is None or source is None or getattr(script, "_cfgpp_wired", False):
        return False
    button.click(fn=inversion.prompt_from_image, inputs=[image], outputs=[source])
    script._cfgpp_wired = True
    return True


# -- XYZ --------------------------------------------------------------------------------------------
AXES: tuple[tuple[str, str, str], ...] = (
    ("[CFG++ inversion] Enabled", "cfgpp_inversion_enabled", "bool"),
    ("[CFG++ inversion] Source prompt", "cfgpp_inversion_source_prompt", "str"),
    ("[CFG++ inversion] CFG scale", "cfgpp_inversion_cfg_scale", "float"),
    ("[CFG++ inversion] Iterations", "cfgpp_inversion_iterations", "int"),
)


def add_axes() -> int:
    """Append the inversion's axes to XYZ's list unless they are there; returns how many were added."""
    module = xyz.find_xyz_module()
    if module is None:
        return 0
    present = {getattr(opt, "label", None) for opt in module.axis_options}
    boolean_choice = getattr(module, "boolean_choice", None)
    bool_choices = boolean_choice(reverse=True) if boolean_choice else (lambda: ["True", "False"])
    confirm_range = getattr(module, "confirm_range", xyz._confirm_range)
    added = 0
    for label, attr, kind in AXES:
        if label in present:
            continue
        if kind == "bool":
            opt = module.AxisOption(label, str, xyz._apply_bool(attr), choices=bool_choices)
        elif kind == "str":
            opt = module.AxisOption(label, str, xyz._apply_value(attr))
        elif kind == "float":
            opt = module.AxisOption(
                label, float, xyz._apply_value(attr), confirm=confirm_range(0.0, MAX_CFG, label)
            )
        else:
            opt = module.AxisOption(
                label, int, xyz._apply_value(attr), confirm=confirm_range(0, MAX_ITERATIONS, label)
            )
        module.axis_options.append(opt)
        added += 1
    return added
