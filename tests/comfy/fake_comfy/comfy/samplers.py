# ruff: noqa: B006  (ComfyUI's signatures: transformer_options={} and model_options={} defaults)
"""comfy/samplers.py (a125cd84), reduced to the sampling path: KSampler (:1097-1160) / sample() (:1047)
-> CFGGuider.sample (OUTER_SAMPLE wrappers, :1013-1045) -> outer_sample (:990) -> inner_sample
(``sample_sigmas`` into the transformer_options, :972-988) -> KSAMPLER.sample (:736-761) -> the
k-diffusion sampler -> KSamplerX0Inpaint (:398-410) -> sampling_function (cfg 1 optimisation,
:377-392) -> calc_cond_batch (cond and uncond batched while memory allows, ``sigmas`` and ControlNet
residuals per call, :216-358) -> cfg_function (post-cfg functions, :360-375) and BaseModel.apply_model."""

from __future__ import annotations

import math
import uuid

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
from comfy.k_diffusion import sampling as k_diffusion_sampling


def convert_cond(cond):
    out = []
    for c in cond:
        temp = c[1].copy()
        temp["cross_attn"] = c[0]
        # comfy/sampler_helpers.py:57-67 keeps a cond's model_conds; the fake takes them as the
        # tensors encode_model_conds (:696-716) gets from BaseModel.extra_conds (model_base.py:268-276):
        # c_concat (mask + masked latent) for inpainting models, y (the adm vector) for SDXL.
        temp["model_conds"] = dict(c[1].get("model_conds", {}))
        temp["uuid"] = uuid.uuid4()
        out.append(temp)
    return out


def calc_cond_batch(model, conds, x_in, timestep, model_options):
    out_conds = [torch.zeros_like(x_in) for _ in conds]
    out_counts = [torch.ones_like(x_in) * 1e-37 for _ in conds]
    to_run = []
    for i, cond in enumerate(conds):
        for c in cond or []:
            to_run.append((c, i))
    while to_run:
        first_shape = x_in.shape
        to_batch_temp = list(range(len(to_run)))
        to_batch_temp.reverse()
        to_batch = to_batch_temp[:1]
        free_memory = comfy.model_management.get_free_memory(x_in.device)
        for i in range(1, len(to_batch_temp) + 1):
            batch_amount = to_batch_temp[: len(to_batch_temp) // i]
            input_shape = [len(batch_amount) * first_shape[0]] + list(first_shape)[1:]
            if math.prod(input_shape) * 1.5 < free_memory:
                to_batch = batch_amount
                break
        input_x, c_cross, cond_or_uncond, uuids, control, extra = [], [], [], [], None, {}
        for x in to_batch:
            c, idx = to_run.pop(x)
            input_x.append(x_in)
            c_cross.append(c["cross_attn"])
            for key, value in c.get("model_conds", {}).items():
                extra.setdefault(key, []).append(value)
            cond_or_uncond.append(idx)
            uuids.append(c["uuid"])
            control = c.get("control")
        batch_chunks = len(cond_or_uncond)
        input_x = torch.cat(input_x)
        c = {"c_crossattn": torch.cat(c_cross)}
        c.update({key: torch.cat(values) for key, values in extra.items()})  # cond_cat (:145), each key
        timestep_ = torch.cat([timestep] * batch_chunks)
        transformer_options = comfy.patcher_extension.merge_nested_dicts(
            {}, model_options.get("transformer_options", {}), copy_dict1=False
        )
        transformer_options["cond_or_uncond"] = cond_or_uncond[:]
        transformer_options["uuids"] = uuids[:]
        transformer_options["sigmas"] = timestep
        c["transformer_options"] = transformer_options
        if control is not None:
            c["control"] = control.get_control(
                input_x, timestep_, c, len(cond_or_uncond), transformer_options
            )
        output = model.apply_model(input_x, timestep_, **c).chunk(batch_chunks)
        for o in range(batch_chunks):
            out_conds[cond_or_uncond[o]] += output[o]
            out_counts[cond_or_uncond[o]] += 1.0
    return [out_conds[i] / out_counts[i] for i in range(len(out_conds))]


def cfg_function(
    model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options={}, cond=None, uncond=None
):
    cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {
            "denoised": cfg_result,
            "cond": cond,
            "uncond": uncond,
            "cond_scale": cond_scale,
            "model": model,
            "uncond_denoised": uncond_pred,
            "cond_denoised": cond_pred,
            "sigma": timestep,
            "model_options": model_options,
            "input": x,
        }
        cfg_result = fn(args)
    return cfg_result


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    else:
        uncond_ = uncond
    out = calc_cond_batch(model, [cond, uncond_], x, timestep, model_options)
    return cfg_function(
        model, out[0], out[1], cond_scale, x, timestep, model_options, cond=cond, uncond=uncond_
    )


class KSamplerX0Inpaint:
    def __init__(self, model, sigmas):
        self.inner_model = model
        self.sigmas = sigmas

    def __call__(self, x, sigma, denoise_mask, model_options={}, seed=None):
        if denoise_mask is not None:
            latent_mask = 1.0 - denoise_mask
            x = (
                x * denoise_mask
                + self.inner_model.inner_model.model_sampling.noise_scaling(
                    sigma.reshape([sigma.shape[0]] + [1] * (len(self.noise.shape) - 1)),
                    self.noise,
                    self.latent_image,
                )
                * latent_mask
            )
        out = self.inner_model(x, sigma, model_options=model_options, seed=seed)
        if denoise_mask is not None:
            out = out * denoise_mask + self.latent_image * latent_mask
        return out


class Sampler:
    def max_denoise(self, model_wrap, sigmas):
        max_sigma = float(model_wrap.inner_model.model_sampling.sigma_max)
        sigma = float(sigmas[0])
        return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma


KSAMPLER_NAMES = ["euler", "euler_cfg_pp", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m"]


class KSAMPLER(Sampler):
    def __init__(self, sampler_function, extra_options={}, inpaint_options={}):
        self.sampler_function = sampler_function
        self.extra_options = extra_options
        self.inpaint_options = inpaint_options

    def sample(
        self,
        model_wrap,
        sigmas,
        extra_args,
        callback,
        noise,
        latent_image=None,
        denoise_mask=None,
        disable_pbar=False,
    ):
        extra_args["denoise_mask"] = denoise_mask
        model_k = KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        noise = model_wrap.inner_model.model_sampling.noise_scaling(
            sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas)
        )
        total_steps = len(sigmas) - 1
        k_callback = None
        if callback is not None:
            k_callback = lambda x: callback(x["i"], x["denoised"], x["x"], total_steps)  # noqa: E731
        samples = self.sampler_function(
            model_k,
            noise,
            sigmas,
            extra_args=extra_args,
            callback=k_callback,
            disable=disable_pbar,
            **self.extra_options,
        )
        return model_wrap.inner_model.model_sampling.inverse_noise_scaling(sigmas[-1], samples)


def ksampler(sampler_name, extra_options={}, inpaint_options={}):
    return KSAMPLER(getattr(k_diffusion_sampling, f"sample_{sampler_name}"), extra_options, inpaint_options)


def sampler_object(name):
    return ksampler(name)


class CFGGuider:
    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds = {}
        self.cfg = 1.0

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative})

    def set_cfg(self, cfg):
        self.cfg = cfg

    def inner_set_conds(self, conds):
        for k in conds:
            self.original_conds[k] = convert_cond(conds[k])

    def __call__(self, *args, **kwargs):
        return self.predict_noise(*args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return sampling_function(
            self.inner_model,
            x,
            timestep,
            self.conds.get("negative"),
            self.conds.get("positive"),
            self.cfg,
            model_options=model_options,
            seed=seed,
        )

    def inner_sample(
        self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed
    ):
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:
            latent_image = self.inner_model.process_latent_in(latent_image)
        extra_model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
        extra_model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        extra_args = {"model_options": extra_model_options, "seed": seed}
        executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(
            sampler.sample,
            sampler,
            comfy.patcher_extension.get_all_wrappers(
                comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE,
                extra_args["model_options"],
                is_model_options=True,
            ),
        )
        samples = executor.execute(
            self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar
        )
        return self.inner_model.process_latent_out(samples.to(torch.float32))

    def outer_sample(
        self,
        noise,
        latent_image,
        sampler,
        sigmas,
        denoise_mask=None,
        callback=None,
        disable_pbar=False,
        seed=None,
    ):
        self.inner_model = self.model_patcher.model
        device = self.model_patcher.load_device
        try:
            self.model_patcher.pre_run()
            output = self.inner_sample(
                noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed
            )
        finally:
            self.model_patcher.cleanup()
        del self.inner_model
        return output

    def sample(
        self,
        noise,
        latent_image,
        sampler,
        sigmas,
        denoise_mask=None,
        callback=None,
        disable_pbar=False,
        seed=None,
    ):
        if sigmas.shape[-1] == 0:
            return latent_image
        self.conds = {k: [dict(c) for c in v] for k, v in self.original_conds.items()}
        orig_model_options = self.model_options
        try:
            self.model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
            # prepare_model_patcher (comfy/sampler_helpers.py:152-161): the ModelPatcher's wrappers
            comfy.patcher_extension.merge_nested_dicts(
                self.model_options["transformer_options"].setdefault("wrappers", {}),
                self.model_patcher.wrappers,
                copy_dict1=False,
            )
            executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(
                self.outer_sample,
                self,
                comfy.patcher_extension.get_all_wrappers(
                    comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, self.model_options, is_model_options=True
                ),
            )
            output = executor.execute(
                noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed
            )
        finally:
            self.model_options = orig_model_options
        del self.conds
        return output


def sample(
    model,
    noise,
    positive,
    negative,
    cfg,
    device,
    sampler,
    sigmas,
    model_options={},
    latent_image=None,
    denoise_mask=None,
    callback=None,
    disable_pbar=False,
    seed=None,
):
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)


def normal_scheduler(model_sampling, steps):
    s = model_sampling
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
        steps += 1
        append_zero = False
    timesteps = torch.linspace(float(start), float(end), steps)
    sigs = [float(s.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs += [0.0]
    return torch.FloatTensor(sigs)


def simple_scheduler(model_sampling, steps):
    s = model_sampling
    ss = len(s.sigmas) / steps
    sigs = [float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)]
    return torch.FloatTensor(sigs + [0.0])


SCHEDULER_NAMES = ["normal", "simple", "karras"]


def calculate_sigmas(model_sampling, scheduler_name, steps):
    if scheduler_name == "karras":
        return k_diffusion_sampling.get_sigmas_karras(
            n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max)
        )
    return {"normal": normal_scheduler, "simple": simple_scheduler}[scheduler_name](model_sampling, steps)


class KSampler:
    """The KSampler / KSamplerAdvanced schedule (:1097-1160): denoise < 1 samples the tail of a longer
    schedule; start/last steps slice it."""

    def __init__(self, model, steps, device, sampler=None, scheduler=None, denoise=None, model_options={}):
        self.model, self.device = model, device
        self.scheduler, self.sampler = scheduler, sampler
        self.model_options = model_options
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps):
        return calculate_sigmas(self.model.get_model_object("model_sampling"), self.scheduler, steps)

    def set_steps(self, steps, denoise=None):
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps)
        elif denoise <= 0.0:
            self.sigmas = torch.FloatTensor([])
        else:
            new_steps = int(steps / denoise)
            self.sigmas = self.calculate_sigmas(new_steps)[-(steps + 1) :]

    def sample(
        self,
        noise,
        positive,
        negative,
        cfg,
        latent_image=None,
        start_step=None,
        last_step=None,
        force_full_denoise=False,
        denoise_mask=None,
        sigmas=None,
        callback=None,
        disable_pbar=False,
        seed=None,
    ):
        if sigmas is None:
            sigmas = self.sigmas
        if last_step is not None and last_step < (len(sigmas) - 1):
            sigmas = sigmas[: last_step + 1]
            if force_full_denoise:
                sigmas[-1] = 0
        if start_step is not None:
            if start_step < (len(sigmas) - 1):
                sigmas = sigmas[start_step:]
            else:
                return latent_image if latent_image is not None else torch.zeros_like(noise)
        return sample(
            self.model,
            noise,
            positive,
            negative,
            cfg,
            self.device,
            sampler_object(self.sampler),
            sigmas,
            self.model_options,
            latent_image=latent_image,
            denoise_mask=denoise_mask,
            callback=callback,
            disable_pbar=disable_pbar,
            seed=seed,
        )
