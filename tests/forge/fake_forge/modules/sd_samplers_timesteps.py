"""modules.sd_samplers_timesteps: the entries only (dfdcbab :13-24, "DDIM CFG++" among them)."""

from modules import sd_samplers_common


def _not_in_these_tests(model):
    raise NotImplementedError("timestep samplers are not faked")


samplers_data_timesteps = [
    sd_samplers_common.SamplerData("DDIM", _not_in_these_tests, ["ddim"], {}),
    sd_samplers_common.SamplerData("DDIM CFG++", _not_in_these_tests, ["ddim_cfgpp"], {}),
    sd_samplers_common.SamplerData("PLMS", _not_in_these_tests, ["plms"], {}),
]
