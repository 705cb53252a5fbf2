"""modules.options: OptionInfo and Options with the 1.10 signatures."""


class OptionInfo:
    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_reload_ui(self):
        return self


class Options:
    def __init__(self, data_labels):
        object.__setattr__(self, "data_labels", dict(data_labels))
        object.__setattr__(self, "data", {k: v.default for k, v in data_labels.items()})

    def __getattr__(self, item):
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        self.data[key] = value

    def set(self, key, value, is_api=False, run_callbacks=True):
        self.data[key] = value
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data:
            self.data[key] = info.default

    def cast_value(self, key, value):
        default = self.data_labels[key].default
        if isinstance(default, bool):
            return value not in ("False", False)
        return type(default)(value)
