"""execution.py (a125cd84), reduced to running one node the way a /prompt does: the node's class from
NODE_CLASS_MAPPINGS, its inputs (``get_input_data``, :138-199: links resolved by the caller here),
``_async_map_node_over_list`` (:217-291: a V3 class runs ``FUNCTION`` on a locked clone of itself via
``PREPARE_CLASS_CLONE`` + ``make_locked_method_func``; a classic class on an instance) and
``get_output_from_returns`` (:322-365: a V3 ``NodeOutput``'s ``result``, a classic tuple as is).
Left out: lists, caching, lazy inputs, hidden inputs, UI outputs, subgraph expansion."""

from __future__ import annotations

import inspect

from comfy_api.internal import _ComfyNodeInternal, _NodeOutputInternal, is_class, make_locked_method_func


async def get_output_data(class_def: type, inputs: dict) -> tuple:
    obj = class_def()  # execution.py:455-457: the cached node object
    if issubclass(class_def, _ComfyNodeInternal):
        class_def.VALIDATE_CLASS()
        type_obj = class_def if is_class(class_def) else type(class_def)
        f = make_locked_method_func(type_obj, obj.FUNCTION, type_obj.PREPARE_CLASS_CLONE({}))
    else:
        f = getattr(obj, obj.FUNCTION)
    r = await f(**inputs) if inspect.iscoroutinefunction(f) else f(**inputs)
    if isinstance(r, _NodeOutputInternal):
        return tuple(r.result or ())
    if isinstance(r, dict):
        return tuple(r.get("result", ()))
    return tuple(r)
