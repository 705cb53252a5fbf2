"""comfy_api/internal/__init__.py (a125cd84), reduced: the V3 marker classes execution.py checks
(:38-51), ``first_real_override`` (:14-35), ``prune_dict`` (:58-59) and the class lock execution.py
runs ``execute`` on (``lock_class`` / ``make_locked_method_func``, :111-153)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class _ComfyNodeInternal:
    """Base of every V3 node class (execution.py: ``issubclass(class_def, _ComfyNodeInternal)``)."""


class _NodeOutputInternal:
    """Base of every V3 node output (execution.py: ``get_output_from_returns``)."""


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def is_class(obj: Any) -> bool:
    return isinstance(obj, type)


def first_real_override(cls: type, name: str) -> Callable | None:
    """``cls.name`` if a subclass of ``cls.GET_BASE_CLASS()`` defines it, else None."""
    base = cls.GET_BASE_CLASS()
    placeholder = getattr(base, name, None)
    if placeholder is None:
        return None
    for c in cls.mro():
        if c is base:
            break
        if name in c.__dict__ and getattr(c, name).__func__ is not placeholder.__func__:
            return getattr(cls, name)
    return None


def _locked(cls: type) -> type:
    class Locked(type(cls)):
        def __setattr__(self, name, value):
            raise AttributeError(f"Cannot modify class attribute '{name}' on locked class '{cls.__name__}'")

    return Locked(cls.__name__, cls.__bases__, dict(cls.__dict__))


def make_locked_method_func(type_obj: type, func: str, class_clone: type) -> Callable:
    """The node's classmethod ``func`` run on a locked clone of its class (V3 nodes are stateless)."""
    locked = _locked(class_clone)
    method = getattr(type_obj, func).__func__
    if inspect.iscoroutinefunction(method):

        async def run_async(**inputs):
            return await method(locked, **inputs)

        return run_async

    def run(**inputs):
        return method(locked, **inputs)

    return run
