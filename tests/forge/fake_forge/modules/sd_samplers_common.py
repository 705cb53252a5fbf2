"""modules.sd_samplers_common: SamplerData, the Sampler base (launch_sampling sets the denoiser's
``total_steps``, initialize resets ``step``), TorchHijack and the per-image RNG are A1111's
(dfdcbab :13-21, :238-340); the refiner switch reloads through ``forge_model_reload`` (:166-211)."""

# ruff: noqa: F821 -- names defined by the A1111 fake's file executed below

from tests.forge.reuse import run_a1111_fake

run_a1111_fake("modules/sd_samplers_common.py", globals())


def apply_refiner(cfg_denoiser, x):  # Forge's signature replaces the A1111 fake's
    from modules import sd_models, shared

    p = cfg_denoiser.p
    info = getattr(p, "refiner_checkpoint_info", None)
    if info is None or cfg_denoiser.step / cfg_denoiser.total_steps < p.refiner_switch_at:
        return False
    if shared.sd_model.sd_checkpoint_info == info:
        return False
    p.extra_generation_params["Refiner"] = info.short_title
    sd_models.select_checkpoint(info.name)
    sd_models.forge_model_reload()
    cfg_denoiser.update_inner_model()
    return True


def store_latent(x):
    pass
