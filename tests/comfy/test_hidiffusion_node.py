"""The HiDiffusion node in a fake ComfyUI (a125cd84): its inputs, the A1111-path equivalence on a
real tiny UNet, lifetime (clone untouched, nothing left after an exception), pass-through of
unsupported models and bad settings, and the package's import rules."""

from __future__ import annotations

import ast
import logging
import os

import comfy.model_management
import comfy.sample
import nodes
import pytest
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import from_ldm

import lib_hidiff.unet as hd
from lib_hidiff import zoo
from lib_hidiff.comfy import hidiffusion
from lib_hidiff.comfy.nodes import HiDiffusion
from lib_hidiff.unet.presets import PRESETS

from .comfy_env import (
    ClosedFormUNet,
    comfy_model,
    conditioning,
    hook_count,
    latent,
    ldm_sd15_unet,
    nothing_left,
    probe_unet,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ldm():
    return ldm_sd15_unet()


@pytest.fixture(scope="module")
def unet(ldm):
    return from_ldm(ldm).eval()


def _ksampler(model, steps=1, cfg=5.0, sampler="euler", size=(72, 64), seed=7, **kw):
    return nodes.common_ksampler(
        model, seed, steps, cfg, sampler, "normal", conditioning(1), conditioning(2), latent(*size), **kw
    )[0]["samples"]


# -- inputs ------------------------------------------------------------------------------------------
def test_inputs_are_the_webui_accordion_settings():
    from lib_hidiff.webui.args import FIELDS  # the tests may compare; lib_hidiff.comfy never imports it

    required = HiDiffusion.INPUT_TYPES()["required"]
    assert required["preset"][0] == list(PRESETS)
    for field in FIELDS:
        if field.name in ("enabled", "hires"):  # a node is on by being in the graph; hires: docs
            continue
        kind, options = required[field.name]
        assert options["default"] == field.default, field.name
        if field.kind == "fraction":
            assert (kind, options["min"], options["max"]) == ("FLOAT", 0.0, 1.0)
        elif field.kind == "choice":
            assert kind == list(field.choices)


# -- the A1111 path's numbers ------------------------------------------------------------------------
def test_unet_output_equals_the_a1111_path(ldm, unet):
    """Every UNet call of a 2-step KSampler at 72x64 latent, replayed through the core on the zoo's ldm
    UNet (block hooks, as the A1111 adapter runs it) with the same weights, settings, clock and seed."""
    model = comfy_model(unet)
    (patched,) = HiDiffusion().patch(model, custom_timing=True, t1=1.0)
    calls, downsampled, attention_rows = [], [], []

    def record(module, args, kwargs, out):
        run = hidiffusion._RUNS[module]
        calls.append((args[0], args[1], kwargs["context"], out, run.clock.value, run.settings, run.seed))

    spies = [
        unet.register_forward_hook(record, with_kwargs=True),
        unet.input_blocks[3][0].register_forward_hook(
            lambda m, a, out: downsampled.append(tuple(out.shape[-2:]))
        ),
        unet.input_blocks[1][1]
        .transformer_blocks[0]
        .attn1.to_q.register_forward_hook(lambda m, a, out: attention_rows.append(out.shape[0])),
    ]
    try:
        _ksampler(patched, steps=2, seed=7)
    finally:
        for spy in spies:
            spy.remove()
    assert nothing_left(unet)
    assert downsampled == [(18, 16), (18, 16)]  # RAD: 72x64 -> /4 at the first Downsample
    assert attention_rows == [8, 8]  # MSW-MSA: cond and uncond rows, 4 windows each
    assert [c[4] for c in calls] == [(0, 2), (1, 2)] and {c[6] for c in calls} == {7}
    for x, t, context, out, clock, settings, seed in calls:
        with torch.no_grad(), zoo.sdpa_attention():
            with hd.apply_hidiffusion(ldm, settings, progress=lambda clock=clock: clock, seed=seed):
                reference = ldm(x, t, context=context)
        assert torch.equal(out, reference)
    assert hd.installed(ldm) is None


def test_clone_without_the_node_is_untouched(unet):
    model = comfy_model(unet)
    before = _ksampler(model)
    (patched,) = HiDiffusion().patch(model)
    assert patched is not model and patched.model is model.model
    assert model.wrappers == {}  # the node added its wrappers to the clone only
    with_hd = _ksampler(patched)
    after = _ksampler(model)
    assert torch.equal(before, after) and not torch.equal(before, with_hd)
    assert nothing_left(unet)


def test_a_second_node_replaces_the_first():
    unet = probe_unet()
    (a,) = HiDiffusion().patch(comfy_model(unet), mswmsa=False)
    (b,) = HiDiffusion().patch(a, raunet=False)
    assert sum(len(w) for kind in b.wrappers.values() for w in kind.values()) == 2
    runs = []
    unet.register_forward_pre_hook(lambda m, a_: runs.append(hidiffusion._RUNS[m].settings))
    _ksampler(b, size=(80, 80))
    assert runs and all(s.raunet is False and s.mswmsa is True for s in runs)


# -- lifetime ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [comfy.model_management.InterruptProcessingException, RuntimeError])
def test_nothing_left_after_an_exception_or_interrupt(error):
    unet = probe_unet()
    (patched,) = HiDiffusion().patch(comfy_model(unet))
    seen = []

    def callback(step, x0, x, total):
        seen.append(hook_count(unet))
        if step == 1:
            raise error("stop")

    lat = latent(80, 80)
    noise = comfy.sample.prepare_noise(lat["samples"], 0)
    with pytest.raises(error):
        comfy.sample.sample(
            patched,
            noise,
            4,
            5.0,
            "euler",
            "normal",
            conditioning(1),
            conditioning(2),
            lat["samples"],
            callback=callback,
        )
    assert seen and seen[0] > 0  # patched while sampling
    assert nothing_left(unet)
    assert [c["open"] for c in unet.calls] == [True, True]  # the gate was open in each call only


def test_gate_is_open_only_inside_our_model_calls():
    unet = probe_unet()
    (patched,) = HiDiffusion().patch(comfy_model(unet))
    _ksampler(patched, steps=3, size=(80, 80))
    _ksampler(comfy_model(unet), steps=2, size=(80, 80))
    assert [c["open"] for c in unet.calls] == [True] * 3 + [False] * 2
    assert nothing_left(unet)


# -- what passes through -------------------------------------------------------------------------------
class FluxLikeModel(ClosedFormUNet):
    """No input_blocks / middle_block / output_blocks: not a UNet HiDiffusion knows."""


def test_unsupported_model_passes_through_with_one_warning(caplog):
    model = comfy_model(FluxLikeModel())
    with caplog.at_level(logging.WARNING, logger="hidiffusion"):
        (out1,) = HiDiffusion().patch(model)
        (out2,) = HiDiffusion().patch(model)
    assert out1 is model and out2 is model
    lines = [r.getMessage() for r in caplog.records if "FluxLikeModel" in r.getMessage()]
    assert len(lines) == 1 and "sampling without HiDiffusion" in lines[0]


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"msw_start": 0.8, "msw_end": 0.2}, "msw_start"), ({"preset": "sdxl_2048"}, "preset")],
)
def test_bad_settings_leave_the_model_untouched(caplog, changes, named):
    model = comfy_model(probe_unet())
    with caplog.at_level(logging.WARNING, logger="hidiffusion"):
        (out,) = HiDiffusion().patch(model, **changes)
    assert out is model and out.wrappers == {}
    assert any(named in r.getMessage() and "without HiDiffusion" in r.getMessage() for r in caplog.records)


def test_both_parts_off_adds_nothing():
    model = comfy_model(probe_unet())
    (out,) = HiDiffusion().patch(model, raunet=False, mswmsa=False)
    assert out.wrappers == {}


# -- import rules --------------------------------------------------------------------------------------
def test_the_package_never_imports_the_webui_glue_and_imports_comfy_lazily():
    folder = os.path.join(REPO, "lib_hidiff", "comfy")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any("webui" in m for m in mods), (name, mods)
        for node in tree.body:  # module level: no ComfyUI import
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m == "comfy" or m.startswith("comfy.") for m in mods), (name, mods)
                # comfy_api (the V3 schema) only where the repository's __init__ imports it on purpose
                assert name == "nodes_v3.py" or not any(m.startswith("comfy_api") for m in mods), name
