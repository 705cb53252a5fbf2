"""modules.shared: opts, cmd_opts, state and the loaded model (a plain attribute here)."""

import argparse

from modules.options import OptionInfo, Options  # noqa: F401  (extensions use shared.OptionInfo)

BUILTIN_OPTIONS = {
    "hide_samplers": OptionInfo([]),
    "batch_cond_uncond": OptionInfo(True),
    "skip_early_cond": OptionInfo(0.0),
    "s_min_uncond_all": OptionInfo(False),
    "eta_ancestral": OptionInfo(1.0),
    "hypertile_enable_unet": OptionInfo(False),
    "hypertile_enable_unet_secondpass": OptionInfo(False),
    "token_merging_ratio": OptionInfo(0.0),
    "token_merging_ratio_hr": OptionInfo(0.0),
    "enable_quantization": OptionInfo(False),
    "refiner_switch_by_sample_steps": OptionInfo(True),
    "img2img_extra_noise": OptionInfo(0.0),
}


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.sampling_step = 0
        self.sampling_steps = 0


def _cmd_opts():
    parser = argparse.ArgumentParser()
    return parser.parse_args([])


opts = Options(BUILTIN_OPTIONS)
cmd_opts = _cmd_opts()
state = State()
sd_model = None


def reset():
    global opts, cmd_opts, state, sd_model
    opts = Options(BUILTIN_OPTIONS)
    cmd_opts = _cmd_opts()
    state = State()
    sd_model = None
