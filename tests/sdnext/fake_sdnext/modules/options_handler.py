"""SD.Next's Options (modules/options_handler.py@058a7f0c:23-270), reduced.

Values live in ``data``; reading an option falls back to its label's default (:45-57);
``add_option`` only records the label (:235-236); ``cast_value`` converts to the default's type.
"""

from __future__ import annotations

from typing import Any


class Options:
    def __init__(self, templates: dict[str, Any]):
        object.__setattr__(self, "data_labels", dict(templates))
        object.__setattr__(self, "data", {k: v.default for k, v in templates.items()})

    def __getattr__(self, item: str) -> Any:
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def add_option(self, key: str, info: Any) -> None:
        self.data_labels[key] = info

    def get_default(self, key: str) -> Any:
        label = self.data_labels.get(key)
        return None if label is None else label.default

    def cast_value(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        default = self.data_labels[key].default if key in self.data_labels else None
        if default is None:
            default = getattr(self, key, None)
        if default is None:
            return None
        expected = type(default)
        if expected is bool and value == "False":
            return False
        return value if isinstance(value, expected) else expected(value)
