"""SD.Next's OptionInfo (modules/options.py@058a7f0c:14-80).

The signature matters: ``OptionInfo(default, label, component, component_args, onchange, section,
refresh, folder, submit, comment_before, comment_after, category_id, *args, **kwargs)``; extra
keywords such as A1111's ``infotext=`` are accepted and ignored (options.py:37-39).
"""

from __future__ import annotations

from typing import Any


def options_section(section_identifier: tuple, options_dict: dict) -> dict:
    for v in options_dict.values():
        v.section = section_identifier[:2]
    return options_dict


class OptionInfo:
    def __init__(
        self,
        default: Any = None,
        label: str = "",
        component: Any = None,
        component_args: Any = None,
        onchange: Any = None,
        section: tuple | None = None,
        refresh: Any = None,
        folder: bool = False,
        submit: Any = None,
        comment_before: str = "",
        comment_after: str = "",
        category_id: Any = None,
        *args: Any,
        **kwargs: Any,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after

    def info(self, info: str) -> OptionInfo:
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        return self
