"""The CFG++ samplers as data for a WebUI's sampler list.

`SamplerInfo.as_webui_tuple()` is an entry in the WebUI's `samplers_k_diffusion` format
(label, function, aliases, options); `extra_params` is its `sampler_extra_params` entry. Option
values are str or bool, so the HTTP API can coerce them to strings. No display name ends in a
schedule-type label: the WebUI would split "X Karras" into sampler "X" and schedule "Karras".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .ddim import sample_ddim_cfgpp
from .dpmpp import sample_dpmpp_2m_cfgpp, sample_dpmpp_2s_ancestral_cfgpp, sample_dpmpp_sde_cfgpp
from .euler import sample_euler_ancestral_cfgpp, sample_euler_cfgpp


@dataclass(frozen=True)
class SamplerInfo:
    key: str
    """Stable internal id (ComfyUI-style), for settings, infotext mapping and tests."""
    name: str
    """Display name in the sampler dropdown and infotext."""
    function: Callable
    aliases: tuple[str, ...]
    options: dict = field(default_factory=dict)
    """WebUI SamplerData options: scheduler, second_order, uses_ensd, brownian_noise, default_eta_is_0."""
    extra_params: tuple[str, ...] = ()
    """Keyword arguments the WebUI may pass from its settings (its `sampler_extra_params`)."""
    official: bool = True
    """False where no official CFG++ rule exists and this project defines one (DPM++ SDE)."""
    webui_builtin: str | None = None
    """Name of a WebUI built-in that implements the same sampler (WebUI >= 1.10 ships "DDIM CFG++")."""
    alt_name: str | None = None
    """A display name that does not collide with `webui_builtin`, if both are to be listed."""

    def as_webui_tuple(self) -> tuple[str, Callable, list[str], dict]:
        return self.name, self.function, list(self.aliases), dict(self.options)


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo(
        "euler_cfg_pp",
        "Euler CFG++",
        sample_euler_cfgpp,
        ("k_euler_cfgpp", "euler_cfg_pp"),
        {},
        ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    ),
    SamplerInfo(
        "euler_ancestral_cfg_pp",
        "Euler a CFG++",
        sample_euler_ancestral_cfgpp,
        ("k_euler_a_cfgpp", "euler_ancestral_cfg_pp"),
        {"uses_ensd": True},
        ("s_noise",),
    ),
    SamplerInfo(
        "dpmpp_2m_cfg_pp",
        "DPM++ 2M CFG++",
        sample_dpmpp_2m_cfgpp,
        ("k_dpmpp_2m_cfgpp", "dpmpp_2m_cfg_pp"),
        {"scheduler": "karras"},
    ),
    SamplerInfo(
        "dpmpp_2s_ancestral_cfg_pp",
        "DPM++ 2S a CFG++",
        sample_dpmpp_2s_ancestral_cfgpp,
        ("k_dpmpp_2s_a_cfgpp", "dpmpp_2s_ancestral_cfg_pp"),
        {"scheduler": "karras", "uses_ensd": True, "second_order": True},
        ("s_noise",),
    ),
    SamplerInfo(
        "dpmpp_sde_cfg_pp",
        "DPM++ SDE CFG++",
        sample_dpmpp_sde_cfgpp,
        ("k_dpmpp_sde_cfgpp", "dpmpp_sde_cfg_pp"),
        {"scheduler": "karras", "second_order": True, "brownian_noise": True},
        ("s_noise",),
        official=False,
    ),
    SamplerInfo(
        "ddim_cfg_pp",
        "DDIM CFG++",
        sample_ddim_cfgpp,
        ("k_ddim_cfgpp", "ddim_cfg_pp"),
        {"scheduler": "ddim", "uses_ensd": True, "default_eta_is_0": True},
        ("s_noise",),
        webui_builtin="DDIM CFG++",
        alt_name="DDIM CFG++ (k-diffusion)",
    ),
)

SAMPLERS_BY_KEY: dict[str, SamplerInfo] = {info.key: info for info in SAMPLERS}
