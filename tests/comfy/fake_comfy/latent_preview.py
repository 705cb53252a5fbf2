"""latent_preview.py (a125cd84): the sampler nodes' callback keeps the last x0 (no previews here)."""


def prepare_callback(model, steps, x0_output_dict=None):
    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0

    return callback
