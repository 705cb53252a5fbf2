"""A tiny stand-in for gradio 3.41 (tests only): components hold their constructor arguments.

Input components take ``tooltip=`` (the WebUI pops it before gradio sees it); layout blocks do not,
as in the WebUI, so passing it to one fails here as it would there.
"""

from __future__ import annotations

created: list = []  # every component made, in order


class Block:
    def __init__(self, *, elem_id=None, elem_classes=None, visible=True, render=True, **kwargs):
        self.elem_id = elem_id
        self.elem_classes = elem_classes
        self.visible = visible
        created.append(self)


class BlockContext(Block):
    def __init__(self, *, label=None, open=True, min_width=None, equal_height=None, variant=None, **kwargs):
        super().__init__(**kwargs)
        self.label = label
        self.open = open

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Row(BlockContext):
    pass


class Column(BlockContext):
    pass


class Group(BlockContext):
    pass


class Blocks(BlockContext):
    pass


class Accordion(BlockContext):
    def __init__(self, label=None, open=True, **kwargs):
        super().__init__(label=label, open=open, **kwargs)


class IOComponent(Block):
    def __init__(self, value=None, *, label=None, tooltip=None, interactive=None, info=None, **kwargs):
        super().__init__(**kwargs)
        self.value = value
        self.label = label
        self.tooltip = tooltip
        self.handlers: list = []

    def change(self, fn=None, _js=None, inputs=None, outputs=None, **kwargs):
        self.handlers.append(("change", fn, _js))


class Checkbox(IOComponent):
    pass


class Slider(IOComponent):
    def __init__(self, minimum=0, maximum=100, value=None, *, step=None, **kwargs):
        super().__init__(value=minimum if value is None else value, **kwargs)
        self.minimum, self.maximum, self.step = minimum, maximum, step


class _Choices(IOComponent):
    def __init__(
        self, choices=None, value=None, *, type="value", multiselect=None, allow_custom_value=False, **kwargs
    ):
        super().__init__(value=value, **kwargs)
        self.choices = list(choices or [])


class Radio(_Choices):
    pass


class Dropdown(_Choices):
    pass


class CheckboxGroup(_Choices):
    pass


class HTML(IOComponent):
    pass


class Number(IOComponent):
    pass


class Textbox(IOComponent):
    pass


class Image(IOComponent):
    pass


class Button(IOComponent):
    def click(self, fn=None, _js=None, inputs=None, outputs=None, **kwargs):
        self.handlers.append(("click", fn, inputs, outputs))


def update(**kwargs):
    return {"__type__": "generic_update", **kwargs}
