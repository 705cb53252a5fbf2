"""HiDiffusion with Forge's built-in ControlNet: residuals fit the maps RAU-Net leaves.

Forge hands ControlNet / T2I-Adapter residuals to the UNet as the ``control`` dict and adds them
with ``apply_control`` (fake backend/nn/unet.py, as dfdcbab unet.py:44-52): an entry that does not
fit its map is printed as "warning control could not be applied" and dropped. A spy around that
function records, for every entry the UNet pops, the map it went to and whether it was added; a
spy on ``KModel.apply_model`` keeps the full-size residuals the ControlNets computed. The oracle:
during RAU-Net steps every entry is added, each equal to its full-size residual area-averaged to
the map's size (the rule of the core's diffusers ControlNet sinks), without one warning line.
"""

from __future__ import annotations

import os

import backend.nn.unet as forge_unet_module
import pytest
import torch
import torch.nn.functional as F
from backend.nn.cnets.cldm import ControlNet as ControlNetModel
from backend.nn.cnets.t2i_adapter import Adapter
from backend.patcher.controlnet import ControlNet, T2IAdapter
from modules import shared

import lib_hidiff.unet as hd
from lib_hidiff.unet.patcher import Installation
from lib_hidiff.webui import generation
from lib_hidiff.webui.hosts.a1111 import A1111Host
from lib_hidiff.webui.hosts.forge import ForgeHost

from .forge_env import HERE, forge_unet, hook_count, ldm_sd15_unet, unet_engine

FAKE_FORGE = os.path.join(HERE, "fake_forge")

WARNING = "warning control could not be applied"
HD = {"enabled": True, "t1": 1.0}  # RAU-Net at every step


@pytest.fixture(scope="module")
def unet():
    return forge_unet(ldm_sd15_unet())


@pytest.fixture(scope="module")
def controlnets(unet):
    return [ControlNet(ControlNetModel(unet, seed=s)) for s in (1, 2)]


@pytest.fixture(scope="module")
def adapter():
    return T2IAdapter(Adapter(channels=(32, 64, 128, 128), seed=3))


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _unit(model, seed=0, **more):
    return {"model": model, "image": _image(128, 144, seed), "weight": 1.0, **more}


class Spy:
    """Every UNet call: the full-size control dict it was given, and each entry apply_control added."""

    def __init__(self, monkeypatch, engine):
        self.calls: list[dict] = []
        real_apply = forge_unet_module.apply_control

        def apply_control(h, control, name):
            if control is not None and control.get(name) and control[name][-1] is not None:
                ctrl, before = control[name][-1], h.clone()
                out = real_apply(h, control, name)
                try:  # a batch-1 entry (T2I-Adapter) broadcasts
                    added = torch.equal(out, before + ctrl)
                except RuntimeError:  # it does not fit: Forge printed the warning and went on
                    added = False
                self.calls[-1]["applied"].append((name, tuple(before.shape[-2:]), ctrl, added))
                return out
            return real_apply(h, control, name)

        monkeypatch.setattr(forge_unet_module, "apply_control", apply_control)
        kmodel = engine.forge_objects.unet.model
        real_model = kmodel.apply_model

        def apply_model(*args, control=None, **kwargs):
            full = (
                None
                if control is None
                else {k: [None if t is None else t.clone() for t in v] for k, v in control.items()}
            )
            act = generation.current()
            self.calls.append({"full": full, "applied": [], "hidiffusion": act is not None})
            return real_model(*args, control=control, **kwargs)

        monkeypatch.setattr(kmodel, "apply_model", apply_model)

    def check(self, resized_somewhere: bool = True) -> int:
        """Every entry of every call was added, fitted by area to its map; returns the resized count."""
        resized = 0
        for call in self.calls:
            full, applied = call["full"], call["applied"]
            # the UNet pops each list from its end: input entries, then the middle, then the skips
            expected = [
                (n, t) for n in ("input", "middle", "output") for t in reversed(full[n]) if t is not None
            ]
            assert [n for n, _ in expected] == [n for n, *_ in applied]
            for (name, residual), (_, hw, ctrl, added) in zip(expected, applied):
                assert added, f"{name} residual {tuple(residual.shape)} not added to a {hw} map"
                if tuple(residual.shape[-2:]) != hw:
                    resized += 1
                    assert torch.allclose(ctrl, F.interpolate(residual, size=hw, mode="area"), atol=1e-6)
                else:
                    assert torch.equal(ctrl, residual)
        assert (resized > 0) == resized_somewhere
        return resized


def _no_patches(unet, engine):
    assert generation.current() is None and hd.installed(unet) is None and hook_count(unet) == 0
    loaded = engine.forge_objects_after_applying_lora.unet
    assert loaded.controlnet_linked_list is None and repr(loaded.model_options) == repr(
        {"transformer_options": {}}
    )


@pytest.fixture
def engine(forge, unet):
    shared.sd_model = unet_engine(unet)
    return shared.sd_model


def test_controlnet_residuals_are_added_at_every_level_during_raunet_steps(
    forge, engine, unet, controlnets, monkeypatch, capsys
):
    units = [_unit(controlnets[0])]
    _, before = forge.txt2img([False], units, steps=1, seed=5)  # ControlNet alone: nothing resized
    spy = Spy(monkeypatch, engine)
    _, res = forge.txt2img([HD], units, steps=1, seed=5)
    assert WARNING not in capsys.readouterr().out
    [call] = spy.calls
    assert call["hidiffusion"] and [n for n, *_ in call["applied"]] == ["middle"] + ["output"] * 12
    # 576x512 px, a 64x72 latent: RAU-Net's RAD takes level 1 to /4 (16x18, not 32x36)
    sizes = [hw for _, hw, *_ in call["applied"]]
    assert sizes[-1] == (64, 72) and (16, 18) in sizes and (32, 36) not in sizes
    assert spy.check() == 10  # the skips of input blocks 3-11 and the middle block
    assert "HiDiffusion: True" in res.infotexts[0]
    _no_patches(unet, engine)
    spy.calls.clear()
    _, again = forge.txt2img([HD], units, steps=1, seed=5)
    assert torch.equal(again.images[0], res.images[0]) and spy.check() == 10
    spy.calls.clear()
    _, after = forge.txt2img([False], units, steps=1, seed=5)
    spy.check(resized_somewhere=False)
    assert torch.equal(after.images[0], before.images[0])
    _no_patches(unet, engine)


def test_without_the_fit_forge_drops_the_control_with_warnings(
    forge, engine, controlnets, monkeypatch, capsys
):
    # The failure the fit prevents, reproduced by the fake: take the core's control copy away.
    monkeypatch.setattr(Installation, "_take_control", lambda self, sinks, args, kwargs: None)
    spy = Spy(monkeypatch, engine)
    forge.txt2img([HD], [_unit(controlnets[0])], steps=1, seed=5)
    assert capsys.readouterr().out.count(WARNING) == 10
    assert sum(not added for call in spy.calls for *_, added in call["applied"]) == 10


def test_multi_unit_stack_with_a_t2i_adapter(forge, engine, unet, controlnets, adapter, monkeypatch, capsys):
    spy = Spy(monkeypatch, engine)
    units = [_unit(controlnets[0], 1), _unit(controlnets[1], 2, weight=0.5), _unit(adapter, 3)]
    forge.txt2img([HD], units, steps=1, seed=5)
    assert WARNING not in capsys.readouterr().out
    for call in spy.calls:  # the adapter's features go to input blocks 2, 5, 8, 11
        assert [n for n, *_ in call["applied"]] == ["input"] * 4 + ["middle"] + ["output"] * 12
    # per call: the deep output skips and middle as above, and the adapter's features after input 5, 8, 11
    assert spy.check() == 10 + 3
    _no_patches(unet, engine)


def test_img2img_with_controlnet(forge, engine, unet, controlnets, monkeypatch, capsys):
    spy = Spy(monkeypatch, engine)
    init = torch.randn(1, 4, 64, 72, generator=torch.Generator().manual_seed(4))
    forge.img2img([HD], [_unit(controlnets[0])], steps=3, denoising_strength=0.5, init_latent=init, seed=5)
    assert WARNING not in capsys.readouterr().out
    assert len(spy.calls) == 2 and spy.check() == 2 * 10  # 3 steps at strength 0.5: 2 run
    _no_patches(unet, engine)


def test_hires_fix_with_controlnet(forge, engine, unet, controlnets, monkeypatch, capsys):
    spy = Spy(monkeypatch, engine)
    forge.txt2img(
        [{**HD, "hires": "full"}],
        [_unit(controlnets[0])],
        width=288,
        height=256,
        steps=1,
        enable_hr=True,
        hr_scale=2.0,
        hr_cfg=7.0,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
        seed=5,
    )
    assert WARNING not in capsys.readouterr().out
    first, hires = spy.calls[:1], spy.calls[1:]
    # the first pass is below native size (HiDiffusion's gate leaves it alone); the hires pass at 2x,
    # with the control image of the hires size
    assert [c["full"]["output"][0].shape[-2:] for c in first] == [(32, 36)]
    assert [c["full"]["output"][0].shape[-2:] for c in hires] == [(64, 72)] * 2
    assert spy.check() == 2 * 10
    _no_patches(unet, engine)


def _lllite_engine(unet, seed: int = 6):
    """An engine whose patcher carries a ControlLLLite attn1 patch on input blocks 4 and 5 (level 1,
    depth-2 modules: the control image /16 = the level-1 token grid of a 576x512 picture)."""
    import sys

    sys.path.insert(0, os.path.join(FAKE_FORGE, "extensions-builtin", "sd_forge_controlllite"))
    try:
        from lib_controllllite.lib_controllllite import LLLiteModule, control_net_lllite_patch
    finally:
        sys.path.pop(0)
    torch.manual_seed(seed)
    image = _image(512, 576) * 2 - 1
    modules = {}
    for block in (4, 5):
        name = f"lllite_unet_input_blocks_{block}_1_transformer_blocks_0_attn1_to_q"
        modules[name] = LLLiteModule(name, in_dim=64, depth=2, cond_emb_dim=16, mlp_dim=16)
        modules[name].set_cond_image(image)
    engine = unet_engine(unet)
    patched = engine.forge_objects_after_applying_lora.unet.clone()
    patched.set_model_attn1_patch(control_net_lllite_patch(modules))
    engine.forge_objects_after_applying_lora.unet = patched
    return engine


def test_controllllite_turns_raunet_off_with_one_message(forge, unet, monkeypatch):
    shared.sd_model = _lllite_engine(unet)
    _, res = forge.txt2img([HD], steps=1, seed=5)
    assert (
        "HiDiffusion RAU-Net: False" in res.infotexts[0] and "HiDiffusion MSW-MSA: True" in res.infotexts[0]
    )
    assert "ControlLLLite" in res.comments
    assert hd.installed(unet) is None and hook_count(unet) == 0
    # the failure this avoids: with RAU-Net on, LLLite's embedding no longer fits the tokens
    monkeypatch.setattr(ForgeHost, "adjust", A1111Host.adjust)
    shared.sd_model = _lllite_engine(unet)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        forge.txt2img([HD], steps=1, seed=5)
    assert hd.installed(unet) is None and hook_count(unet) == 0
