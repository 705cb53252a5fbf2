"""SD.Next's ``shared`` (modules/shared.py@058a7f0c), reduced to what the extension and the fake use.

``sd_model`` is a diffusers pipeline (its UNet ``sd_model.unet``), ``sd_model_type`` the family
('sd', 'sdxl', ...), ``opts`` the settings with SD.Next's defaults for the options the fake reads
(ui_definitions.py:118, :388-393, :766-796), ``log`` the SD.Next logger (shared.py:12).
"""

from __future__ import annotations

from types import SimpleNamespace

from modules.logger import log  # noqa: F401 -- re-exported as in SD.Next
from modules.options import OptionInfo, options_section  # noqa: F401
from modules.options_handler import Options


def _templates() -> dict[str, OptionInfo]:
    values = {
        "model_modular_enable": False,
        "hidiffusion_raunet": True,
        "hidiffusion_attn": True,
        "hidiffusion_steps": 8,
        "hidiffusion_t1": -1,
        "hidiffusion_t2": -1,
        "control_hires": False,
        "scheduler_eta": 1.0,
        "mask_apply_overlay": True,  # ui_definitions.py:625
        "schedulers_solver_order": 0,
        "schedulers_use_loworder": True,
        "schedulers_prediction_type": "default",
        "schedulers_sigma": "default",
        "schedulers_beta_schedule": "default",
        "schedulers_use_thresholding": False,
        "schedulers_timestep_spacing": "default",
        "schedulers_timesteps": "",
        "schedulers_rescale_betas": False,
        "schedulers_beta_start": 0,
        "schedulers_beta_end": 0,
        "schedulers_timesteps_range": 1000,
        "schedulers_shift": 3,
        "schedulers_fallback": True,
        "schedulers_dynamic_shift": False,
        "schedulers_base_shift": 0.5,
        "schedulers_max_shift": 1.15,
        "uni_pc_variant": "bh2",
        "add_model_name_to_info": True,
        "disable_apply_params": "",
        "clip_skip_enabled": True,
    }
    return {k: OptionInfo(v, k) for k, v in values.items()}


class State:
    """shared.state (modules/shared_state.py@058a7f0c): interrupt/skip flags and step counters."""

    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.paused = False
        self.sampling_step = 0
        self.sampling_steps = 0
        self.job = ""
        self.current_latent = None
        self.current_image = None

    def begin(self, title: str = "", task_id: int = 0, api: bool | None = None) -> str:
        self.interrupted = self.interrupted if title.startswith("Save") else False
        self.skipped = False
        self.job = title
        return title

    def end(self, task_id=None, api=None) -> None:
        pass

    def update(self, job: str, steps: int = 0, jobs: int = 0) -> None:
        self.sampling_steps = steps
        self.sampling_step = 0

    def step(self, step: int = 1) -> None:
        self.sampling_step += step

    def nextjob(self) -> None:
        pass

    def interrupt(self) -> None:
        self.interrupted = True


cmd_opts = SimpleNamespace(hidiffusion_disable=False, profile=False, lowvram=False, medvram=False)
opts = Options(_templates())
state = State()
sd_model = None
sd_refiner = None
sd_model_type = "sd"
sd_loaded = False
prompt_styles = None


def list_samplers() -> list:
    """shared.list_samplers (shared.py:148-151): refreshes the name map only."""
    from modules import sd_samplers

    sd_samplers.set_samplers()
    return sd_samplers.all_samplers


def reset() -> None:
    """A fresh SD.Next session (tests)."""
    global opts, state, sd_model, sd_refiner, sd_model_type, sd_loaded
    opts = Options(_templates())
    state = State()
    sd_model = sd_refiner = None
    sd_model_type = "sd"
    sd_loaded = False
    cmd_opts.hidiffusion_disable = False
