"""comfy/patcher_extension.py (a125cd84:49-129): wrapper types, registration and the executor chain."""

from __future__ import annotations


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"


def add_wrapper_with_key(wrapper_type, key, wrapper, transformer_options, is_model_options=False):
    if is_model_options:
        transformer_options = transformer_options.setdefault("transformer_options", {})
    transformer_options.setdefault("wrappers", {}).setdefault(wrapper_type, {}).setdefault(key, []).append(
        wrapper
    )


def get_all_wrappers(wrapper_type, transformer_options, is_model_options=False):
    """Every wrapper of a type, in key order (:89-96)."""
    if is_model_options:
        transformer_options = transformer_options.get("transformer_options", {})
    out = []
    for ws in transformer_options.get("wrappers", {}).get(wrapper_type, {}).values():
        out.extend(ws)
    return out


class WrapperExecutor:
    """Calls wrapper i with the executor of wrapper i + 1; the last one calls the original (:98-134)."""

    def __init__(self, original, class_obj, wrappers, idx):
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx
        self.is_last = idx == len(wrappers)

    def __call__(self, *args, **kwargs):
        nxt = WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1)
        return nxt.execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    @classmethod
    def new_executor(cls, original, wrappers, idx=0):
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original, class_obj, wrappers, idx=0):
        return cls(original, class_obj, wrappers, idx)


def copy_nested_dicts(input_dict):
    new = input_dict.copy()
    for k, v in input_dict.items():
        if isinstance(v, dict):
            new[k] = copy_nested_dicts(v)
        elif isinstance(v, list):
            new[k] = v.copy()
    return new


def merge_nested_dicts(dict1, dict2, copy_dict1=True):
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for k, v in dict2.items():
        if isinstance(v, dict):
            cur = merged.setdefault(k, {})
            merged[k] = merge_nested_dicts(v, cur)
        elif isinstance(v, list):
            merged.setdefault(k, []).extend(v)
        else:
            merged[k] = v
    return merged
