"""SD.Next's UI components (modules/ui_components.py@058a7f0c:12-91).

``InputAccordion`` is a hidden ``gr.Checkbox`` (``<id>-checkbox``) that opens a ``gr.Accordion``
(``<id>``, class ``input-accordion``); SD.Next's UI bundle adds the header checkbox
(ui/inputAccordion.ts). It is the first component a script returns for it.
"""

from __future__ import annotations

import gradio as gr


class FormComponent:
    pass


class ToolButton(FormComponent, gr.IOComponent):
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.change(
            fn=None, _js=f'function(checked){{ inputAccordionChecked("{self.accordion_id}", checked); }}'
        )
        self.accordion = gr.Accordion(
            **{
                **kwargs,
                "elem_id": self.accordion_id,
                "label": kwargs.get("label", "Accordion"),
                "elem_classes": ["input-accordion"],
                "open": value,
            }
        )

    def extra(self):
        return gr.Column(
            elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0
        )

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)
