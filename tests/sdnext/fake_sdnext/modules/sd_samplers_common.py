"""SD.Next's sampler record (modules/sd_samplers_common.py@058a7f0c:12, :14)."""

from collections import namedtuple

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])
flow_models = ["f1", "f2", "sd3", "lumina", "auraflow", "sana", "zimage"]
