"""backend.sampling.sampling_function: one CFG evaluation the Forge way (dfdcbab :154-363).

* cond and uncond rows go through ``KModel.apply_model`` in one batch, with
  ``transformer_options`` copied from the patcher's ``model_options`` plus ``cond_or_uncond`` and
  ``sigmas``;
* a prompt's AND-parts are averaged by weight, then scaled by the summed weight ("edit strength");
* with ``cond_scale`` ≈ 1 the uncond rows are **not run** unless
  ``model_options["disable_cfg1_optimization"]``; ``uncond_pred`` is then zeros, as in Forge;
* ``sampler_post_cfg_function`` entries get ``uncond_denoised`` / ``cond_denoised``;
* ControlNets (the patcher's ``controlnet_linked_list``) get the batch's ``transformer_options``
  and compute the ``control`` dict for the batch, which goes to ``apply_model`` (:261-268, :328-357);
  ``sampling_prepare`` / ``sampling_cleanup`` run their ``pre_run`` / ``cleanup`` (:394-407);
* returns ``(denoised, cond_pred, uncond_pred)``.
"""

from __future__ import annotations

import math

import torch

from backend import memory_management

COND, UNCOND = 0, 1


def _rows(t: torch.Tensor, index: list[int]) -> torch.Tensor:
    return torch.stack([t[i] for i in index])


def sampling_function_inner(
    model, x, timestep, uncond, cond, cond_composition, cond_scale, model_options, control=None, c_concat=None
):
    skip_uncond = uncond is None or (
        math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    )
    owners = [i for i, parts in enumerate(cond_composition) for _ in parts]  # image of each cond row
    x_in, sigma_in, context, marks = [_rows(x, owners)], [_rows(timestep, owners)], [cond], [COND]
    if not skip_uncond:
        x_in.append(x)
        sigma_in.append(timestep)
        context.append(uncond)
        marks.append(UNCOND)
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options["cond_or_uncond"] = marks
    transformer_options["sigmas"] = timestep
    x_in, sigma_in, c = torch.cat(x_in), torch.cat(sigma_in), {"c_crossattn": torch.cat(context)}
    if c_concat is not None:
        c["c_concat"] = torch.cat([_rows(c_concat, owners)] + ([c_concat] if not skip_uncond else []))
    if control is not None:
        p = control
        while p is not None:
            p.transformer_options = transformer_options
            p = p.previous_controlnet
        c["control"] = control.get_control(x_in, sigma_in, dict(c), len(marks))
    out = model.apply_model(x_in, sigma_in, transformer_options=transformer_options, **c)
    n_cond = len(owners)
    cond_out = out[:n_cond]
    uncond_pred = torch.zeros_like(x) if skip_uncond else out[n_cond:]

    cond_pred = torch.zeros_like(x)
    strength = torch.zeros(x.shape[0], dtype=x.dtype)
    for i, parts in enumerate(cond_composition):
        total = sum(w for _, w in parts)
        cond_pred[i] = sum(cond_out[row] * w for row, w in parts) / total
        strength[i] = total
    strength = strength.view(-1, 1, 1, 1)
    if bool(torch.all(torch.isclose(strength, torch.ones_like(strength)))):
        denoised = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    else:
        denoised = uncond_pred + (cond_pred - uncond_pred) * cond_scale * strength
    for fn in model_options.get("sampler_post_cfg_function", []):
        denoised = fn(
            {
                "denoised": denoised,
                "cond": cond,
                "uncond": uncond,
                "model": model,
                "uncond_denoised": uncond_pred,
                "cond_denoised": cond_pred,
                "sigma": timestep,
                "model_options": model_options,
                "input": x,
            }
        )
    return denoised, cond_pred, uncond_pred


def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    unet_patcher = self.inner_model.inner_model.forge_objects.unet
    extra = {
        "control": unet_patcher.controlnet_linked_list,
        "c_concat": _image_cond(denoiser_params.image_cond, denoiser_params.x),
    }
    return sampling_function_inner(
        unet_patcher.model,
        denoiser_params.x,
        denoiser_params.sigma,
        denoiser_params.text_uncond,
        denoiser_params.text_cond,
        cond_composition,
        cond_scale,
        unet_patcher.model_options,
        **{k: v for k, v in extra.items() if v is not None},
    )


def _image_cond(image_cond, x):
    """Forge concatenates the image conditioning only where it matches the latent (:338-347)."""
    if (
        isinstance(image_cond, torch.Tensor)
        and image_cond.shape[0] == x.shape[0]
        and image_cond.shape[2:] == x.shape[2:]
    ):
        return image_cond
    return None


def sampling_prepare(unet, x):
    """Forge loads the patcher's model here (dfdcbab :366-399): device, LoRA weights merged; then
    pre-runs the ControlNets (:396-397)."""
    memory_management.load_models_gpu(models=[unet], memory_required=0, hard_memory_preservation=0)
    predictor = unet.model.predictor
    for cnet in unet.list_controlnets():
        cnet.pre_run(unet.model, lambda p: predictor.percent_to_sigma(p))


def sampling_cleanup(unet):
    for cnet in unet.list_controlnets():
        cnet.cleanup()
