"""API helpers (modules/api/helpers.py@058a7f0c:19-31): sampler names are checked against the list."""

from modules import sd_samplers
from modules.api import HTTPException


def validate_sampler_name(name):
    if sd_samplers.is_separator(name):
        raise HTTPException(status_code=404, detail="Sampler not found")
    if sd_samplers.all_samplers_map.get(name) is not None:
        return name
    if isinstance(name, str) and name not in ("", "None"):
        sampler = sd_samplers.find_sampler(name)
        if sampler is not None:
            return sampler.name
    raise HTTPException(status_code=404, detail="Sampler not found")
