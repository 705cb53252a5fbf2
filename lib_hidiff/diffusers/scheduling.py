"""What every diffusers CFG++ scheduler shares: config keys, the capture, the fallback, signatures.

A CFG++ scheduler subclasses a diffusers scheduler and keeps its timesteps, sigmas, scaling, noise
draws and state; only `step()` changes. The class gets the base's `__init__` signature plus the
CFG++ keys (so `from_config`, `save_config` and `register_to_config` see them), and `step` /
`set_timesteps` keep the base's signatures, because pipelines inspect them (`eta`, `generator`,
`timesteps`, `sigmas`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from .capture import UNetOutputCapture
from .guidance import GuidedSplit, split_guided

__all__ = ["CFGppSchedulerMixin", "check_scale", "cfgpp_init", "keep_signature"]

logger = logging.getLogger("lib_hidiff.diffusers")


def check_scale(value: Any) -> float:
    """λ as a float; one clear line for anything that is not a finite number >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"CFG++ scale λ (cfgpp_scale) must be a finite number >= 0; got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"CFG++ scale λ (cfgpp_scale) must be a finite number >= 0; got {value!r}")
    return number


def cfgpp_init(base: type, extras: dict[str, Any], check: Callable[[dict], dict]) -> Callable:
    """An `__init__` for a subclass of `base` that also takes and records the `extras` config keys.

    The base's own (config-registering) `__init__` runs first; the extras are then added to the
    config. `__signature__` lists the base's parameters plus the extras, which is what diffusers'
    `from_config` / `extract_init_dict` read to decide which config keys the class takes.
    """
    base_init = base.__init__
    signature = inspect.signature(base_init)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    tail = [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in extras.items()]

    def __init__(self, *args, **kwargs):
        values = check({k: kwargs.pop(k, default) for k, default in extras.items()})
        base_init(self, *args, **kwargs)
        self.register_to_config(**values)
        self._cfgpp_check_config()
        self.cfgpp_capture = None
        self.cfgpp_fallback_steps = 0
        self._cfgpp_warned = False

    __init__.__signature__ = signature.replace(parameters=params + tail)
    __init__.__doc__ = f"{base.__name__}'s parameters, plus {', '.join(extras)}."
    return __init__


def keep_signature(base_method: Callable) -> Callable[[Callable], Callable]:
    """Decorator: the override reports the base method's signature (pipelines inspect it)."""
    return functools.wraps(base_method)


class CFGppSchedulerMixin:
    """The CFG++ side of a diffusers scheduler subclass (put before the diffusers base class).

    `cfgpp_capture` is the UNetOutputCapture on the pipeline's UNet (set by `cfgpp(pipe)` or by
    hand). Each `step()` takes the captured call; when it is not this step's `[uncond, cond]` batch,
    the step is the base scheduler's step on the guided prediction, with one warning per run.
    """

    cfgpp_capture: UNetOutputCapture | None
    cfgpp_fallback_steps: int
    _cfgpp_warned: bool
    cfgpp_base: type  # the diffusers scheduler class this one extends

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every CFG++ scheduler starts a run in set_timesteps: a set_timesteps of the base's own
        # signature (pipelines inspect it for `timesteps` / `sigmas`) that resets the run first.
        super().__init_subclass__(**kwargs)
        base = cls.__dict__.get("cfgpp_base")
        if base is None or "set_timesteps" in cls.__dict__:
            return

        @keep_signature(base.set_timesteps)
        def set_timesteps(self, *args: Any, **kw: Any) -> Any:
            self._cfgpp_new_run()
            return base.set_timesteps(self, *args, **kw)

        cls.set_timesteps = set_timesteps

    def _cfgpp_check_config(self) -> None:
        """Raise ValueError (one line) for a base configuration the CFG++ rule does not cover."""
        # Flow-matching sigmas need the α = 1 − σ form of the rule (docs/cfgpp.md, "Not covered").
        config = self.config
        if config.get("use_flow_sigmas") or config.get("prediction_type") == "flow_prediction":
            raise ValueError(
                "CFG++ schedulers support epsilon, v_prediction and sample models, not flow matching"
            )

    @property
    def cfgpp_scale(self) -> float:
        """λ, exactly as recorded in the config."""
        return self.config.cfgpp_scale

    def _cfgpp_new_run(self) -> None:
        self.cfgpp_fallback_steps = 0
        self._cfgpp_warned = False
        if self.cfgpp_capture is not None:
            self.cfgpp_capture.take()  # a call from before this run is never this run's

    def _cfgpp_begin(
        self, args: tuple, kwargs: dict, *, needs_steps: bool = False
    ) -> tuple[Callable, inspect.BoundArguments, GuidedSplit | None]:
        """The start of every CFG++ `step()`: (the base step, its bound arguments, this step's split).

        A split of None means: take the base step as called (``base(*bound.args, **bound.kwargs)``).
        With a split, the step index is initialised where the base scheduler keeps one.
        ``needs_steps``: the base reads ``num_inference_steps`` (no split before set_timesteps).
        """
        base = self.cfgpp_base.step
        bound = bind_step(base, self, args, kwargs)
        if needs_steps and self.num_inference_steps is None:
            return base, bound, None
        split = self._cfgpp_split(bound.arguments["model_output"], bound.arguments["timestep"])
        if split is not None and getattr(self, "step_index", 0) is None:
            self._init_step_index(bound.arguments["timestep"])
        return base, bound, split

    def _cfgpp_split(self, model_output: torch.Tensor, timestep: Any) -> GuidedSplit | None:
        capture = self.cfgpp_capture
        if capture is None:
            found: GuidedSplit | str = (
                "no unconditional capture is attached (use lib_hidiff.diffusers.cfgpp(pipe) or "
                "attach_cfgpp(pipe))"
            )
        else:
            found = split_guided(capture.take(), model_output, timestep)
        if isinstance(found, GuidedSplit):
            return found
        self.cfgpp_fallback_steps += 1
        if not self._cfgpp_warned:
            self._cfgpp_warned = True
            logger.warning(
                "%s: %s; taking %s's plain step where this happens in this run",
                type(self).__name__,
                found,
                self.cfgpp_base.__name__,
            )
        return None


def bind_step(base_step: Callable, scheduler: Any, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """The base `step`'s arguments by name (defaults filled in), for calling it back as given."""
    bound = inspect.signature(base_step).bind(scheduler, *args, **kwargs)
    bound.apply_defaults()
    return bound


def call_step(base_step: Callable, bound: inspect.BoundArguments, **changes: Any) -> Any:
    """Call the base step with some arguments changed, always as return_dict=True."""
    arguments = dict(bound.arguments)
    arguments.update(changes)
    arguments["return_dict"] = True
    self_ = arguments.pop("self")
    var_kw = {}
    for name, param in inspect.signature(base_step).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = arguments.pop(name, {})
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            arguments.pop(name, None)
    return base_step(self_, **arguments, **var_kw)


def finish_step(out: Any, return_dict: bool, prev_sample: torch.Tensor, x0: torch.Tensor | None) -> Any:
    """The base output with the CFG++ sample (and guided x0 where the output has that field)."""
    fields = dict(out)
    fields["prev_sample"] = prev_sample
    if x0 is not None and "pred_original_sample" in type(out).__dataclass_fields__:
        fields["pred_original_sample"] = x0
    result = type(out)(**fields)
    return result if return_dict else result.to_tuple()
