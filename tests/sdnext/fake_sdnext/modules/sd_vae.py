"""SD.Next's VAE helpers (modules/sd_vae.py@058a7f0c): the pipeline's VAE scale factor."""

from modules import shared


def get_vae_scale_factor(model=None) -> int:
    model = model if model is not None else shared.sd_model
    vae = getattr(model, "vae", None)
    if vae is None:
        return 8
    return 2 ** (len(vae.config.block_out_channels) - 1)
