"""modules.ui_components: InputAccordion, a hidden checkbox driving an accordion (1.7+ header checkbox)."""

import gradio as gr


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.change(fn=None, _js=f'inputAccordionChecked("{self.accordion_id}")', inputs=[self])
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

    def __exit__(self, *exc):
        self.accordion.__exit__(*exc)
        return False
