"""comfy_api/latest/_io.py (a125cd84), reduced to the V3 schema the node pack uses.

Mirrored: the io types as classes with nested ``Input`` / ``Output`` and their keyword parameters
(Boolean :239-257, Int :259-283, Float :285-309, Combo :333-384, Latent :437, Conditioning :449,
Sampler / Sigmas / Noise :567-578, Model :600); ``Schema`` (:1008-1178: ``validate``, ``finalize``
naming unnamed outputs, ``get_v1_info`` turning inputs into the classic ``INPUT_TYPES`` dict);
``ComfyNode`` (:1192-1541: ``define_schema`` / ``execute`` classmethods, ``GET_SCHEMA`` setting the
classic attributes, ``FUNCTION`` = ``EXECUTE_NORMALIZED`` which wraps what ``execute`` returns in a
``NodeOutput``, ``PREPARE_CLASS_CLONE``); ``NodeOutput`` (:1543-1574). Left out: dynamic and
multi-typed inputs, hidden inputs' values, UI outputs, resources, async execute.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.internal import _ComfyNodeInternal, _NodeOutputInternal, prune_dict


class classproperty:
    def __init__(self, f):
        self.f = f

    def __get__(self, obj, owner):
        return self.f(owner)


class Input:
    Parent: type = None

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict or {}

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def as_dict(self) -> dict:
        return prune_dict(
            {
                "display_name": self.display_name,
                "optional": self.optional,
                "tooltip": self.tooltip,
                "lazy": self.lazy,
            }
        ) | prune_dict(self.extra_dict)


class WidgetInput(Input):
    def __init__(
        self,
        id,
        display_name=None,
        optional=False,
        tooltip=None,
        lazy=None,
        default=None,
        socketless=None,
        widget_type=None,
        force_input=None,
        extra_dict=None,
    ):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict:
        return super().as_dict() | prune_dict(
            {
                "default": self.default,
                "socketless": self.socketless,
                "widgetType": self.widget_type,
                "forceInput": self.force_input,
            }
        )


class Output:
    Parent: type = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


def comfytype(io_type: str):
    """Bind ``io_type`` to a type and give it its own Input / Output subclasses pointing back at it."""

    def bind(cls):
        cls.io_type = io_type
        for name in ("Input", "Output"):
            nested = cls.__dict__.get(name) or getattr(cls, name, None)
            if nested is not None:
                nested = type(nested.__name__, (nested,), {"Parent": cls})
                setattr(cls, name, nested)
        return cls

    return bind


class ComfyTypeIO:
    io_type: str = None
    Input = Input
    Output = Output


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id,
            display_name=None,
            optional=False,
            tooltip=None,
            lazy=None,
            default=None,
            label_on=None,
            label_off=None,
            socketless=None,
            force_input=None,
        ):
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, socketless, None, force_input
            )
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


@comfytype("INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id,
            display_name=None,
            optional=False,
            tooltip=None,
            lazy=None,
            default=None,
            min=None,
            max=None,
            step=None,
            control_after_generate=None,
            display_mode=None,
            socketless=None,
            force_input=None,
        ):
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, socketless, None, force_input
            )
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict(
                {
                    "min": self.min,
                    "max": self.max,
                    "step": self.step,
                    "control_after_generate": self.control_after_generate,
                    "display": self.display_mode,
                }
            )


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id,
            display_name=None,
            optional=False,
            tooltip=None,
            lazy=None,
            default=None,
            min=None,
            max=None,
            step=None,
            round=None,
            display_mode=None,
            socketless=None,
            force_input=None,
        ):
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, socketless, None, force_input
            )
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict(
                {
                    "min": self.min,
                    "max": self.max,
                    "step": self.step,
                    "round": self.round,
                    "display": self.display_mode,
                }
            )


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id,
            options=None,
            display_name=None,
            optional=False,
            tooltip=None,
            lazy=None,
            default=None,
            control_after_generate=None,
            upload=None,
            image_folder=None,
            remote=None,
            socketless=None,
        ):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict(
                {
                    "multiselect": self.multiselect,
                    "options": self.options,
                    "control_after_generate": self.control_after_generate,
                }
            )


@comfytype("LATENT")
class Latent(ComfyTypeIO):
    pass


@comfytype("CONDITIONING")
class Conditioning(ComfyTypeIO):
    pass


@comfytype("SAMPLER")
class Sampler(ComfyTypeIO):
    pass


@comfytype("SIGMAS")
class Sigmas(ComfyTypeIO):
    pass


@comfytype("NOISE")
class Noise(ComfyTypeIO):
    pass


@comfytype("MODEL")
class Model(ComfyTypeIO):
    pass


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        ids = [i.id for i in self.inputs or []] + [o.id for o in self.outputs or []]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.node_id}: input and output ids must be unique: {ids}")

    def finalize(self) -> None:
        for i, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def get_v1_info(self) -> dict:
        """The classic ``INPUT_TYPES`` dict (add_to_dict_v1, :1180-1185: ``optional`` moves the input)."""
        info: dict = {"required": {}}
        for i in self.inputs or []:
            options = i.as_dict()
            options.pop("optional", None)
            info.setdefault("optional" if i.optional else "required", {})[i.id] = (i.io_type, options)
        return info


class NodeOutput(_NodeOutputInternal):
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode(_ComfyNodeInternal):
    RELATIVE_PYTHON_MODULE = None
    SCHEMA = None
    hidden = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def GET_BASE_CLASS(cls):
        return ComfyNode

    @classmethod
    def VALIDATE_CLASS(cls) -> None:
        from comfy_api.internal import first_real_override

        for name in ("define_schema", "execute"):
            if first_real_override(cls, name) is None:
                raise Exception(f"No {name} function was defined for node class {cls.__name__}.")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def INPUT_TYPES(cls, include_hidden=True, return_schema=False):
        schema = cls.FINALIZE_SCHEMA()
        info = schema.get_v1_info()
        return (info, schema) if return_schema else info

    @classproperty
    def FUNCTION(cls):  # noqa: N802
        return "EXECUTE_NORMALIZED"

    @classproperty
    def CATEGORY(cls):  # noqa: N802
        return cls.GET_SCHEMA().category

    @classproperty
    def DESCRIPTION(cls):  # noqa: N802
        return cls.GET_SCHEMA().description

    @classproperty
    def RETURN_TYPES(cls):  # noqa: N802
        return [o.io_type for o in cls.GET_SCHEMA().outputs or []]

    @classproperty
    def RETURN_NAMES(cls):  # noqa: N802
        return [o.display_name or o.io_type for o in cls.GET_SCHEMA().outputs or []]

    @classproperty
    def OUTPUT_IS_LIST(cls):  # noqa: N802
        return [o.is_output_list for o in cls.GET_SCHEMA().outputs or []]

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args, **kwargs) -> NodeOutput:
        out = cls.execute(*args, **kwargs)
        if out is None:
            return NodeOutput()
        if isinstance(out, NodeOutput):
            return out
        if isinstance(out, tuple):
            return NodeOutput(*out)
        raise Exception(f"Invalid return type from node: {type(out)}")

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict | None) -> type:
        clone = type(f"{cls.__name__}Clone", (cls, *cls.__bases__), dict(cls.__dict__))
        clone.hidden = dict(hidden_inputs or {})
        return clone
