"""modules_forge.alter_samplers: Forge's extra samplers (dfdcbab: only DDPM, not exercised here)."""

from modules import sd_samplers_common


def _not_in_these_tests(model):
    raise NotImplementedError("DDPM is not faked")


samplers_data_alter = [sd_samplers_common.SamplerData("DDPM", _not_in_these_tests, ["ddpm"], {})]
