"""The SD.Next adapter (vladmandic/sdnext, diffusers-only; facts with path:line at 058a7f0c: docs/hosts/sdnext.md).

SD.Next keeps A1111's scripts API, infotext fields and ``alwayson_scripts``, so the accordion,
arguments, infotext keys and settings are the shared ones. What differs, and where it is handled:

* Passes: no script hook runs per sampling pass. SD.Next itself brackets every pass (base, hires)
  with ``processing_diffusers.process_pre(p)`` / ``process_post(p)`` (the latter in a ``finally``);
  this adapter wraps those two functions once (idempotent, undone on script unload). Before
  SD.Next's own ``process_pre`` it opens HiDiffusion for the pass; after it (PAG's pipeline swap
  and the pass's scheduler are final then) it sets up CFG++; ``process_post`` takes both off.
  ``on_after_process`` (in ``process_images``' ``finally``) takes off whatever an exception left.
  SD.Next's detailer passes (inpainted crops) run without our HiDiffusion.
* UNet and clock: ``shared.sd_model.unet`` (a diffusers UNet2DConditionModel); the clock is
  lib_hidiff.diffusers' SchedulerClock reading the pipeline that runs the pass.
* SD.Next's own HiDiffusion (``p.hidiffusion``): ours steps aside for that generation, one line.
* CFG++: lib_hidiff.diffusers' schedulers, registered as SD.Next samplers (sampler list, per-name
  config, before the final "Same as primary" row, whose position the dropdown relies on). A pass
  whose scheduler is one of them gets the unconditional capture on the UNet and λ in the config;
  under PAG, APG, modular guiders, CFG end < 1, CFG rescale > 0 or with guidance off it runs the
  base sampler instead, with one line.
* Messages: SD.Next sets the root logger to ERROR, so the "hidiffusion" and "lib_hidiff" loggers
  are bridged to SD.Next's own log; ``p.comment`` is never displayed by SD.Next.
* Infotext: SD.Next's parser only reads keys of word characters and spaces ("HiDiffusion RAU-Net"
  comes back as "Net") and its built-in HiDiffusion checkbox reads the "HiDiffusion" key: a pasted
  text is repaired in ``on_infotext_pasted`` and our paste functions read our own copy of that key.
  Its paste handler asks ``should_skip(key)`` -- ``key.lower()`` -- about every value that is not a
  ``gr.update``: our paste functions give ``gr.update`` dicts (lib_hidiff/webui/paste.py).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Host, missing_features

if TYPE_CHECKING:
    import torch.nn as nn

    from lib_hidiff import cfgpp
    from lib_hidiff import unet as hd

__all__ = ["HOST", "SDNextHost"]

# Text an SD.Next checkout with what this adapter relies on contains (install.py).
FEATURES = {
    ("modules", "processing_diffusers.py"): "def process_post(",
    ("modules", "sd_samplers_diffusers.py"): "samplers_data_diffusers",
    ("modules", "scripts_manager.py"): "class ScriptRunner",
}

CFGPP_SEPARATOR = "── CFG++ ──"
LAST_ROW = "Same as primary"  # SD.Next's last sampler row; the primary dropdown drops it by position
PASTED_ENABLED = "HiDiffusion extension"  # where a pasted "HiDiffusion: True" of ours is kept
_WRAPPED = "_hidiffusion_wraps"  # attribute on our wrapper functions: the wrapped original
_BRIDGED_LOGGERS = ("hidiffusion", "lib_hidiff")
RAW_MODE_GUIDANCE = 2.0  # the pipeline's guidance scale when λ (raw mode) is <= 1: any w > 1 works


class _LiveModel:
    """What the scheduler clock reads: the pipeline SD.Next runs now (PAG swaps it in process_pre)."""

    @property
    def _model(self) -> Any:
        from modules import shared

        model = shared.sd_model
        return getattr(model, "pipe", model) if getattr(model, "unet", None) is None else model

    @property
    def scheduler(self) -> Any:
        return self._model.scheduler

    @property
    def _num_timesteps(self) -> Any:
        return getattr(self._model, "_num_timesteps", None)


class _Forward(logging.Handler):
    """Hands our loggers' records to SD.Next's logger at emit time (its handlers are rebuilt after
    every script import, so copying them would go stale)."""

    previous_level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from modules.logger import log
        except ImportError:
            return
        if record.levelno >= log.getEffectiveLevel():
            log.handle(record)


class SDNextHost(Host):
    name = "sdnext"
    label = "SD.Next"
    pass_events: ClassVar[frozenset[str]] = frozenset()  # passes come from process_pre / process_post
    cfgpp_inversion = True  # run at the end of the base pass's process_pre (sdnext_inversion.py)

    def __init__(self) -> None:
        self._ours: dict[str, type] = {}  # display name -> CFG++ scheduler class we registered
        self._undo: list[Callable[[], None]] = []  # what the open pass put on (clock, capture, args)
        self._generation: Any = None  # the processing object between before_process and after_process

    # -- detection ---------------------------------------------------------------------------------
    @classmethod
    def detect(cls) -> bool:
        from . import has_module

        return has_module("modules.scripts_manager")

    @classmethod
    def detect_root(cls, webui_root: str) -> bool:
        return os.path.isfile(os.path.join(webui_root, "modules", "scripts_manager.py"))

    @classmethod
    def install_problems(cls, webui_root: str, torch_version: str | None, tag: str | None) -> list[str]:
        missing = missing_features(webui_root, FEATURES)
        if missing:
            return [
                "sd-webui-hidiffusion: this SD.Next lacks what the extension needs "
                f"({', '.join(missing)}); HiDiffusion and CFG++ may not turn on. Update SD.Next (git pull)."
            ]
        return []

    # -- messages ----------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        from modules.logger import log

        log.warning(message)

    def report(self, p: Any, message: str) -> None:
        """SD.Next writes every ``extra_generation_params`` value into the infotext and shows no
        comments, so a message has no channel besides the log (``log`` above)."""
        comment = getattr(p, "comment", None)
        if callable(comment):
            comment(message)

    @staticmethod
    def _bridge_logging() -> None:
        for name in _BRIDGED_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(h, _Forward) for h in logger.handlers):
                handler = _Forward()
                handler.previous_level = logger.level
                logger.addHandler(handler)
                if logger.level == logging.NOTSET or logger.level > logging.INFO:
                    logger.setLevel(logging.INFO)  # SD.Next's root logger is at ERROR

    @staticmethod
    def _unbridge_logging() -> None:
        for name in _BRIDGED_LOGGERS:
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if isinstance(h, _Forward)]:
                logger.removeHandler(handler)
                logger.setLevel(handler.previous_level)

    # -- HiDiffusion ---------------------------------------------------------------------------------
    def unet(self, sd_model: Any) -> nn.Module | None:
        unet = getattr(sd_model, "unet", None)
        if unet is None:
            unet = getattr(getattr(sd_model, "pipe", None), "unet", None)
        return unet if hasattr(unet, "down_blocks") else None

    def layout(self, sd_model: Any, unet: nn.Module) -> hd.UNetLayout:
        from lib_hidiff import unet as hd
        from lib_hidiff.diffusers.pipeline import native_latent_size

        layout = hd.inspect_unet(unet)
        pipe = sd_model if getattr(sd_model, "unet", None) is unet else getattr(sd_model, "pipe", sd_model)
        native = native_latent_size(pipe, layout)
        return layout if native is None else layout.with_native(native)

    def v_prediction(self, sd_model: Any) -> bool:
        config = getattr(getattr(sd_model, "scheduler", None), "config", None) or {}
        return config.get("prediction_type") == "v_prediction"

    def blocking(self, p: Any) -> str | None:
        if getattr(p, "hidiffusion", False):
            return (
                "HiDiffusion: SD.Next's own HiDiffusion is on for this generation (Advanced > HiDiffusion); "
                "this extension's HiDiffusion steps aside"
            )
        return None

    def adjust(
        self, p: Any, settings: hd.HiDiffusionSettings, is_hr: bool
    ) -> tuple[hd.HiDiffusionSettings, list[str]]:
        if not settings.mswmsa:
            return settings, []
        method = _opt(p, "token_merging_method")
        ratio = float(_opt(p, {"ToMe": "tome_ratio", "ToDo": "todo_ratio"}.get(method, "")) or 0.0)
        if ratio > 0:
            return settings.replace(mswmsa=False), [
                f"HiDiffusion: token merging ({method} {ratio:g}) merges the tokens MSW-MSA windows; "
                "MSW-MSA is off, RAU-Net stays on"
            ]
        if _opt(p, "hypertile_unet_enabled"):
            return settings.replace(mswmsa=False), [
                "HiDiffusion: Hypertile UNet tiles the same self-attention layers as MSW-MSA; "
                "MSW-MSA is off, RAU-Net stays on"
            ]
        return settings, []

    def connect(self) -> None:
        from modules import script_callbacks

        self._bridge_logging()
        # Wrapped at the first generation, not here: importing processing_diffusers reads
        # shared.sd_model, which would ask for a model load while extensions load.
        script_callbacks.on_before_process(self._before_process)
        script_callbacks.on_after_process(self._after_process)
        script_callbacks.on_infotext_pasted(self._repair_pasted)
        script_callbacks.on_script_unloaded(self._disconnect)

    # -- the passes ----------------------------------------------------------------------------------
    def _wrap_passes(self) -> None:
        from modules import processing_diffusers as pd

        for name, make in (("process_pre", self._make_pre), ("process_post", self._make_post)):
            current = getattr(pd, name)
            if getattr(current, _WRAPPED, None) is None:
                wrapper = make(current)
                setattr(wrapper, _WRAPPED, current)
                setattr(pd, name, wrapper)

    def _before_process(self, p: Any) -> None:
        _current(self)._generation = p  # our schedulers are built with this generation's λ (_constructor)
        self._wrap_passes()

    def _disconnect(self) -> None:
        """Script unload: everything off, SD.Next's own functions back (a reload wraps them again)."""
        self._generation = None
        self._end_pass(None)
        self._unbridge_logging()
        pd = sys.modules.get("modules.processing_diffusers")
        if pd is None:
            return
        for name in ("process_pre", "process_post"):
            original = getattr(getattr(pd, name), _WRAPPED, None)
            if original is not None:
                setattr(pd, name, original)

    def _make_pre(self, original: Callable) -> Callable:
        def process_pre(p: Any, *args: Any, **kwargs: Any) -> Any:
            host = _current(self)
            host._guarded(host._end_pass, p)  # a pass left open by an exception
            host._guarded(host._open_hidiffusion, p)
            result = original(p, *args, **kwargs)
            host._guarded(host._open_cfgpp, p)
            host._guarded(host._open_inversion, p)
            return result

        return process_pre

    def _make_post(self, original: Callable) -> Callable:
        def process_post(p: Any, *args: Any, **kwargs: Any) -> Any:
            host = _current(self)
            host._guarded(host._end_pass, p)  # never raises: SD.Next's own cleanup always runs
            return original(p, *args, **kwargs)

        return process_post

    def _guarded(self, step: Callable[[Any], None], p: Any) -> None:
        """Our part of a pass never breaks SD.Next's generation: one line, everything off."""
        try:
            step(p)
        except Exception as e:
            from .. import messages

            message = f"HiDiffusion/CFG++: {type(e).__name__}: {e}; this pass runs without them"
            if p is not None:
                messages.note(p, message)
            else:
                self.log(message)
            if step != self._end_pass:
                self._end_pass(p)

    def _open_hidiffusion(self, p: Any) -> None:
        from lib_hidiff.diffusers.clock import SchedulerClock

        from .. import generation

        if getattr(p, generation.P_ARGS, None) is None or "detailer" in (getattr(p, "ops", None) or ()):
            return
        unet = self.unet(p.sd_model)
        clock = SchedulerClock(_LiveModel())
        if unet is not None:
            clock.attach(unet)  # before the patches: the clock reads each call's timestep first
            self._undo.append(clock.detach)
        act = generation.open_pass(p, is_hr=self.is_hires_pass(p), progress=clock)
        if act is None:
            clock.detach()

    def _open_cfgpp(self, p: Any) -> None:
        from lib_hidiff.diffusers.capture import UNetOutputCapture
        from lib_hidiff.diffusers.scheduling import CFGppSchedulerMixin

        from .. import messages, settings

        pipe = p.sd_model
        scheduler = getattr(pipe, "scheduler", None)
        if not isinstance(scheduler, CFGppSchedulerMixin):
            return
        is_hr = self.is_hires_pass(p)
        guidance = _pass_guidance(p, is_hr)
        mode = settings.get("cfgpp_scale_mode")
        reason = self._cfgpp_refusal(p, pipe, guidance, mode)
        if reason is not None:
            base = scheduler.cfgpp_base
            name = _base_sampler_name(scheduler)
            messages.note(p, f"CFG++: {reason}; sampling with {name or base.__name__} instead")
            # This pass's scheduler object (SD.Next builds one per pass) becomes its base class in
            # place: every pipeline holding it (PAG keeps the original one) samples, and reports, the
            # base sampler. Its config is the base sampler's plus our unused cfgpp_* keys.
            scheduler.__class__ = base
            if name is not None:
                if is_hr:
                    p.hr_sampler_name = name
                else:
                    p.sampler_name = name
            return
        values, notes = self._cfgpp_values(p, "cfgpp_variant" in scheduler.config)
        scheduler.register_to_config(**values)
        capture = UNetOutputCapture().attach(self.unet(pipe))
        scheduler.cfgpp_capture = capture
        self._undo.append(lambda: _detach_capture(scheduler, capture))
        if mode == "raw" and guidance <= 1:
            # λ is the CFG value here: keep the pipeline's unconditional pass (its w is unused).
            previous = p.task_args.get("guidance_scale", _MISSING)
            p.task_args["guidance_scale"] = RAW_MODE_GUIDANCE
            self._undo.append(lambda: _restore_arg(p, "guidance_scale", previous))
        p.extra_generation_params.update(notes)

    def _cfgpp_values(self, p: Any, has_variant: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """This pass's scheduler config (λ, and the DPM++ 2M variant) and the infotext entries."""
        from lib_hidiff.diffusers.scheduling import check_scale

        from .. import samplers, settings

        lam, notes = samplers.lambda_for(p, _pass_guidance(p, self.is_hires_pass(p)))
        values: dict[str, Any] = {"cfgpp_scale": check_scale(lam)}
        if has_variant:
            values["cfgpp_variant"] = str(settings.get("cfgpp_dpmpp_2m_variant")).upper()
            notes[samplers.INFOTEXT_VARIANT] = values["cfgpp_variant"]
        return values, notes

    def construction_values(self, scheduler_config: Any) -> dict[str, Any]:
        """The config one of our schedulers gets as it is built: inside a generation, the values of
        the pass that builds it (SD.Next builds and logs it in update_sampler, before process_pre);
        outside one, or when they cannot be worked out (``_open_cfgpp`` then says why), nothing."""
        p = self._generation
        if p is None:
            return {}
        try:
            return self._cfgpp_values(p, "cfgpp_variant" in scheduler_config)[0]
        except Exception:
            return {}

    def _cfgpp_refusal(self, p: Any, pipe: Any, guidance: float, mode: str) -> str | None:
        cls = type(pipe).__name__
        if "PAG" in cls:
            return "not with PAG (CFG true > 0: a perturbed-attention pipeline)"
        if "APG" in cls:
            return "not with APG (its guidance is not CFG)"
        if getattr(pipe, "guider", None) is not None or "Modular" in cls:
            return "not with modular pipelines (their guider runs the UNet per condition)"
        if self.unet(pipe) is None:
            return f"{cls} has no UNet"
        if mode != "raw" and guidance <= 1:
            return f"guidance is off (CFG scale {guidance:g} <= 1: the pipeline skips the unconditional pass)"
        cfg_end = getattr(p, "cfg_end", 1.0)
        if cfg_end is not None and cfg_end < 1:
            return f"CFG end {cfg_end:g} turns guidance off part-way"
        rescale = getattr(p, "cfg_rescale", 0.0)
        if rescale is not None and rescale > 0:
            return f"CFG rescale {rescale:g} changes the guided prediction"
        return None

    def _open_inversion(self, p: Any) -> None:
        """The img2img "CFG++ inversion" of this pass, when on (after CFG++: same scheduler, same λ)."""
        from .sdnext_inversion import open_inversion

        pipe = p.sd_model
        undo = open_inversion(p, pipe, self.unet(pipe))
        if undo is not None:
            self._undo.append(undo)

    def inversion_job(self, p: Any) -> bool:
        return bool(getattr(p, "init_images", None))  # SD.Next's img2img jobs carry their images

    def _end_pass(self, p: Any) -> None:
        from .. import generation

        generation.release()
        while self._undo:
            self._undo.pop()()

    def _after_process(self, p: Any) -> None:
        _current(self)._generation = None
        self._guarded(self._end_pass, p)

    # -- infotext ------------------------------------------------------------------------------------
    def _repair_pasted(self, text: str, params: dict[str, Any]) -> None:
        """on_infotext_pasted: our keys as written, and "HiDiffusion" kept for our fields only."""
        from .. import infotext

        for key in infotext.PASTE_KEYS:
            if re.fullmatch(r"[\w ]+", key):
                continue  # SD.Next's parser reads it
            match = re.search(rf'(?:^|[\s,]){re.escape(key)}:\s*("(?:[^"\\]|\\.)*"|[^,\n]*)', text)
            if match is None:
                continue
            value = _plain(match.group(1))
            stray = re.split(r"[^\w ]", key)[-1].strip()  # what SD.Next's parser kept of the key
            if stray and params.get(stray) == value:
                params.pop(stray)
            params[key] = value
        if infotext.ENABLED in params and infotext.KEYS["preset"] in params:
            params[PASTED_ENABLED] = params.pop(infotext.ENABLED)  # ours, not SD.Next's built-in

    def paste_fields(self, fields: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """Our paste functions see "HiDiffusion" only when it is ours (see ``_repair_pasted``); keys stay."""
        return [(c, _ours_only(key) if callable(key) else key) for c, key in fields]

    # -- CFG++ samplers -------------------------------------------------------------------------------
    def register_samplers(self, infos: tuple[cfgpp.SamplerInfo, ...]) -> list[str]:
        from modules import sd_samplers, sd_samplers_diffusers
        from modules.sd_samplers_common import SamplerData

        from lib_hidiff.diffusers.registry import CFGPP_SCHEDULERS, cfgpp_scheduler_class

        by_key = {s.cfgpp_key: s for s in CFGPP_SCHEDULERS}
        table = sd_samplers_diffusers.samplers_data_diffusers
        table[:] = [row for row in table if not _is_ours(row)]  # left from before a reload
        rows: list[Any] = []
        for info in infos:
            sched = by_key.get(info.key)
            if sched is None:
                continue  # no diffusers scheduler for this one (DPM++ 2S a, DPM++ SDE CFG++)
            name = info.name
            existing = next((row for row in table if row.name == name), None)
            if existing is not None:
                continue  # SD.Next or another extension has this name
            cls = cfgpp_scheduler_class(sched.key)
            base_name = _BASE_NAMES.get(cls.cfgpp_base.__name__)
            sd_samplers_diffusers.config[name] = {
                **sd_samplers_diffusers.config.get(base_name, {}),
                **dict(sched.config),
            }
            constructor = _constructor(self, sd_samplers_diffusers.DiffusionSampler, name, cls)
            rows.append(SamplerData(name, constructor, list(info.aliases), {}))
            self._ours[name] = cls
        if rows:
            at = next((i for i, row in enumerate(table) if row.name == LAST_ROW), len(table))
            table[at:at] = [SamplerData(CFGPP_SEPARATOR, None, [], {_OURS: True}), *rows]
        self._add_override_mapping()
        sd_samplers.list_samplers()
        sd_samplers.set_samplers()
        return list(self._ours)

    def unregister_samplers(self) -> None:
        from modules import sd_samplers, sd_samplers_diffusers

        table = sd_samplers_diffusers.samplers_data_diffusers
        table[:] = [row for row in table if not _is_ours(row)]
        for name in self._ours:
            sd_samplers_diffusers.config.pop(name, None)
        self._ours.clear()
        sd_samplers.list_samplers()
        sd_samplers.set_samplers()

    def registered_samplers(self) -> list[str]:
        return list(self._ours)

    @staticmethod
    def _add_override_mapping() -> None:
        """Our CFG++ settings restored from infotext as override settings (SD.Next's only source)."""
        from modules import infotext as sdnext_infotext

        from .. import settings

        present = set(sdnext_infotext.mapping)
        for key, label in settings.INFOTEXT.items():
            if (label, key) not in present:
                sdnext_infotext.mapping.append((label, key))


_MISSING = object()
_OURS = "hidiffusion_cfgpp"  # marker in our rows' options: recognised across reloads
_BASE_NAMES = {  # diffusers base class -> SD.Next's sampler of that class (its per-name config)
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
}


def _current(fallback: SDNextHost) -> SDNextHost:
    """The adapter instance in use (hosts.current() after a test's host reset), else ``fallback``."""
    from . import current

    host = current()
    return host if isinstance(host, SDNextHost) else fallback


def _opt(p: Any, key: str) -> Any:
    if not key:
        return None
    value = getattr(p, key, None)
    if value is not None:
        return value
    from modules import shared

    return (getattr(shared.opts, "data", None) or {}).get(key)


def _pass_guidance(p: Any, is_hr: bool) -> float:
    """The guidance scale SD.Next gives this pass's pipeline (processing_diffusers.py:161, :324)."""
    if is_hr and getattr(p, "cfg_image", None) is not None and p.cfg_image > -1:
        return float(p.cfg_image)
    return float(p.cfg_scale if p.cfg_scale is not None else 0.0)


def _base_sampler_name(scheduler: Any) -> str | None:
    return _BASE_NAMES.get(scheduler.cfgpp_base.__name__)


def _detach_capture(scheduler: Any, capture: Any) -> None:
    capture.detach()
    if getattr(scheduler, "cfgpp_capture", None) is capture:
        scheduler.cfgpp_capture = None


def _restore_arg(p: Any, key: str, previous: Any) -> None:
    if previous is _MISSING:
        p.task_args.pop(key, None)
    else:
        p.task_args[key] = previous


def _plain(raw: str) -> Any:
    """A value as SD.Next's parser would have read it (unquoted; True/False; numbers)."""
    import json

    value = raw.strip()
    if value.startswith('"') and value.endswith('"'):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    value = str(value).strip(" ,\n")
    if value in ("True", "False"):
        return value == "True"
    if value.replace(".", "", 1).isdigit():
        return float(value) if "." in value else int(value)
    return value


def _ours_only(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    from .. import infotext

    def read(params: Any) -> Any:
        view = dict(params)
        view.pop(infotext.ENABLED, None)  # without our marker keys it is SD.Next's own HiDiffusion
        if PASTED_ENABLED in view:
            view[infotext.ENABLED] = view.pop(PASTED_ENABLED)
        return fn(view)

    return read


def _is_ours(row: Any) -> bool:
    options = getattr(row, "options", None) or {}
    return bool(options.get(_OURS)) or bool(getattr(row.constructor, _OURS, False))


def _constructor(host: SDNextHost, diffusion_sampler: type, name: str, cls: type) -> Callable[[Any], Any]:
    """SD.Next's constructor for one of our rows (create_sampler calls it, sd_samplers.py@058a7f0c:126).

    The scheduler gets the pass's λ (and DPM++ 2M variant) before SD.Next sees it, so the config
    SD.Next logs (:166-172) and keeps is the one the pass samples with, not the class default.
    """

    def construct(model: Any) -> Any:
        made = diffusion_sampler(name, cls, model)
        scheduler = getattr(made, "sampler", None)
        if scheduler is not None:
            values = _current(host).construction_values(scheduler.config)
            if values:
                scheduler.register_to_config(**values)
        return made

    setattr(construct, _OURS, True)
    construct.__name__ = cls.__name__  # /sdapi/v1/schedulers shows constructor.__name__
    return construct


HOST = SDNextHost
