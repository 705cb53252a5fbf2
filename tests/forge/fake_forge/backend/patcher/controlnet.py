"""backend.patcher.controlnet: ControlNet / T2I-Adapter residuals as Forge builds them (dfdcbab).

* ``apply_controlnet_advanced`` (:11-83): a clone of the UnetPatcher with the control object linked
  in front of the ones it had (``add_patched_controlnet``) -- multi-unit stacks are a linked list;
* ``ControlBase.control_merge`` (:230-279): the ``control`` dict the UNet consumes,
  ``{"input": [...], "middle": [...], "output": [...]}``: a ControlNet's outputs go to "output"
  (appended in input-block order) and its last one to "middle"; a T2I-Adapter's features go to
  "input" (inserted at the front, so ``pop()`` returns them in block order), each scaled by the
  strength; the previous unit's dict is added entry by entry;
* ``ControlNet.get_control`` (:292-339): the hint resized to 8x the latent, the model run on the
  noisy latent of the whole batch, outside [start, end] the previous unit's control only;
* ``T2IAdapter.get_control`` (:490-540): features computed once per hint size, cloned per call;
* ``pre_run`` (:196-199): the percent range turned into sigmas by the predictor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def apply_controlnet_advanced(unet, controlnet, image_bchw, strength, start_percent, end_percent, **advanced):
    cnet = controlnet.copy().set_cond_hint(image_bchw, strength, (start_percent, end_percent))
    m = unet.clone()
    m.add_patched_controlnet(cnet)
    return m


def broadcast_image_to(tensor, target_batch_size, batched_number):
    if tensor.shape[0] == 1:
        return tensor
    per_batch = target_batch_size // batched_number
    tensor = tensor[:per_batch]
    return tensor if tensor.shape[0] == target_batch_size else torch.cat([tensor] * batched_number)


class ControlBase:
    def __init__(self):
        self.cond_hint_original = None
        self.cond_hint = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.timestep_range = None
        self.transformer_options = {}
        self.previous_controlnet = None

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0)):
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        return self

    def pre_run(self, model, percent_to_timestep_function):
        start, end = self.timestep_percent_range
        self.timestep_range = (percent_to_timestep_function(start), percent_to_timestep_function(end))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet):
        self.previous_controlnet = controlnet
        return self

    def cleanup(self):
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()
        self.cond_hint = None
        self.timestep_range = None

    def _out_of_range(self, t):
        return self.timestep_range is not None and (
            t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]
        )

    def control_merge(self, control_input, control_output, control_prev, output_dtype):
        out = {"input": [], "middle": [], "output": []}
        for x in control_input or []:
            if x is not None:
                x = (x * self.strength).to(output_dtype)
            out["input"].insert(0, x)
        for i, x in enumerate(control_output or []):
            key = "middle" if i == len(control_output) - 1 else "output"
            if x is not None:
                x = (x * self.strength).to(output_dtype)
            out[key].append(x)
        if control_prev is not None:
            for key in ("input", "middle", "output"):
                o = out[key]
                for i, prev in enumerate(control_prev[key]):
                    if i >= len(o):
                        o.append(prev)
                    elif prev is not None:
                        o[i] = prev if o[i] is None else o[i] + prev
        return out


class ControlNet(ControlBase):
    def __init__(self, control_model):
        super().__init__()
        self.control_model = control_model
        self.model_sampling_current = None

    def get_control(self, x_noisy, t, cond, batched_number):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        if self._out_of_range(t):
            return control_prev
        size = (x_noisy.shape[2] * 8, x_noisy.shape[3] * 8)
        if self.cond_hint is None or tuple(self.cond_hint.shape[2:]) != size:
            self.cond_hint = F.interpolate(self.cond_hint_original, size=size, mode="nearest-exact")
        hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        timestep = self.model_sampling_current.timestep(t)
        x_in = self.model_sampling_current.calculate_input(t, x_noisy)
        control = self.control_model(
            x=x_in,
            hint=hint.expand(x_noisy.shape[0], -1, -1, -1),
            timesteps=timestep.float(),
            context=cond["c_crossattn"],
            y=cond.get("y"),
        )
        return self.control_merge(None, control, control_prev, x_noisy.dtype)

    def copy(self):
        c = ControlNet(self.control_model)
        c.cond_hint_original, c.strength = self.cond_hint_original, self.strength
        c.timestep_percent_range = self.timestep_percent_range
        return c

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.predictor

    def cleanup(self):
        self.model_sampling_current = None
        super().cleanup()


class T2IAdapter(ControlBase):
    def __init__(self, t2i_model):
        super().__init__()
        self.t2i_model = t2i_model
        self.control_input = None

    def get_control(self, x_noisy, t, cond, batched_number):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        if self._out_of_range(t):
            return control_prev
        size = (x_noisy.shape[2] * 8, x_noisy.shape[3] * 8)
        if self.cond_hint is None or tuple(self.cond_hint.shape[2:]) != size:
            self.control_input = None
            self.cond_hint = F.interpolate(self.cond_hint_original, size=size, mode="nearest-exact")
        if self.control_input is None:
            self.control_input = self.t2i_model(self.cond_hint.to(x_noisy))
        control_input = [None if a is None else a.clone() for a in self.control_input]
        return self.control_merge(control_input, None, control_prev, x_noisy.dtype)

    def copy(self):
        c = T2IAdapter(self.t2i_model)
        c.cond_hint_original, c.strength = self.cond_hint_original, self.strength
        c.timestep_percent_range = self.timestep_percent_range
        return c
