"""The real scripts/hidiffusion.py in a fake Forge 2.x: detection, passes, reloads, exceptions.

One test runs a real tiny UNet in Forge's layout and checks every UNet call against the A1111
path (the same core on the zoo's ldm UNet with the same weights, settings, clock and seed). The
others use a closed-form KModel carrying a real UNet it never calls: the glue installs and opens
HiDiffusion on it exactly as in a real generation, and a probe on ``on_cfg_after_cfg`` (Forge's
denoiser fires it, not ``on_cfg_denoised``) records what was active at every denoiser call.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch
from modules import errors, script_callbacks, sd_models, shared

import lib_hidiff.unet as hd
from lib_hidiff import zoo
from lib_hidiff.webui import generation, hint, hosts, samplers
from lib_hidiff.webui.hosts.forge import ForgeHost

from .forge_env import (
    REPO,
    Engine,
    ForgeUI,
    forge_unet,
    hook_count,
    hybrid_engine,
    ldm_sd15_unet,
    unet_engine,
)


@pytest.fixture(scope="module")
def ldm():
    return ldm_sd15_unet()


@pytest.fixture(scope="module")
def unet(ldm):
    return forge_unet(ldm)


@pytest.fixture
def model(forge, unet):
    shared.sd_model = hybrid_engine(unet, "base")
    return shared.sd_model


class Probe:
    """What HiDiffusion looked like at each CFG denoiser call."""

    def __init__(self):
        self.calls: list[dict | None] = []
        script_callbacks.on_cfg_after_cfg(self)

    def __call__(self, params):
        act = generation.current()
        session = act.installation.session if act is not None else None
        self.calls.append(
            None
            if session is None
            else {
                "progress": act.progress(),
                "is_hr": act.is_hr,
                "settings": session.settings,
                "unet": act.installation._unet(),
                "hooks": hook_count(act.installation._unet()),
            }
        )

    @property
    def active(self):
        return [c is not None for c in self.calls]


def _no_patches(unet):
    assert generation.current() is None
    assert hd.installed(unet) is None
    assert hook_count(unet) == 0


# -- detection -------------------------------------------------------------------------------------
def test_forge_is_detected_and_everything_registers(forge):
    assert hosts.detect() is ForgeHost and isinstance(hosts.current(), ForgeHost)
    assert hosts.unsupported_reason() is None
    titles = [s.title() for s in forge.runners["txt2img"].alwayson_scripts]
    assert "HiDiffusion" in titles and "CFG++ samplers" in titles
    assert samplers.registered()
    ours = {
        c.callback.__name__
        for cs in script_callbacks.callback_map.values()
        for c in cs
        if "lib_hidiff" in c.script
    }
    assert {"on_cfg_denoiser", "on_model_loaded", "on_unload", "add_axes"} <= ours
    labels = [o.label for o in forge.xyz().axis_options if o.label.startswith("[HiDiffusion]")]
    assert len(labels) == 6


# -- a real generation -----------------------------------------------------------------------------
def _generate_and_replay(forge, ldm, unet):
    """One 1-step generation at 576x512 on the Forge UNet; every UNet call replayed on the A1111
    path (the core on the ldm UNet with the same weights, settings, clock and seed)."""
    downsampled, attention_rows, calls = [], [], []

    def record(module, args, kwargs, out):
        act = generation.current()
        session = act.installation.session
        calls.append(
            (args[0], args[1], kwargs["context"], out, act.progress(), session.settings, session.seed)
        )

    spies = [
        unet.input_blocks[3].register_forward_hook(
            lambda m, a, out: downsampled.append(tuple(out.shape[-2:]))
        ),
        unet.input_blocks[1][1]
        .transformer_blocks[0]
        .attn1.to_q.register_forward_hook(lambda m, a, out: attention_rows.append(out.shape[0])),
        unet.register_forward_hook(record, with_kwargs=True),
    ]
    try:
        _, res = forge.txt2img([{"enabled": True, "t1": 1.0}], steps=1, seed=7)
    finally:
        for spy in spies:
            spy.remove()
    # 576x512 px is a 72x64 latent: RAU-Net's downsampler takes level 1 to /4 (16x18, not 32x36);
    # MSW-MSA splits each of the 2 rows (cond, uncond) into 4 windows.
    assert downsampled == [(16, 18)] and attention_rows == [8]
    assert "HiDiffusion: True" in res.infotexts[0] and errors.reported == []
    _no_patches(unet)
    [(x, t, context, out, clock, settings, seed)] = calls
    with torch.no_grad(), zoo.sdpa_attention():
        with hd.apply_hidiffusion(ldm, settings, progress=lambda: clock, seed=seed):
            reference = ldm(x, t, context=context)
    _no_patches(ldm)
    return out, reference


def test_real_unet_matches_the_a1111_path_and_leaves_the_unet_as_before(forge, ldm, unet):
    shared.sd_model = unet_engine(unet)
    options_before = repr(shared.sd_model.forge_objects.unet.model_options)
    out, reference = _generate_and_replay(forge, ldm, unet)
    assert torch.equal(out, reference)
    assert repr(shared.sd_model.forge_objects.unet.model_options) == options_before


def test_mswmsa_under_an_attn1_patch(forge, ldm, unet):
    # ControlLLLite-style attn1 patches make Forge call attn1 with context = value = the tokens.
    engine = unet_engine(unet)
    patched = engine.forge_objects_after_applying_lora.unet.clone()
    patched.set_model_attn1_patch(lambda n, context, value, extra_options: (n, context, value))
    engine.forge_objects_after_applying_lora.unet = patched
    shared.sd_model = engine
    out, reference = _generate_and_replay(forge, ldm, unet)
    assert torch.equal(out, reference)


# -- passes, clock, exceptions ---------------------------------------------------------------------
def test_clock_is_the_cfg_denoiser_step(forge, model):
    probe = Probe()
    forge.txt2img([True], steps=4, n_iter=2)
    assert [c["progress"] for c in probe.calls] == [(0, 4), (1, 4), (2, 4), (3, 4)] * 2


@pytest.mark.parametrize(
    ("policy", "hires_active", "hires_raunet"),
    [("off", False, None), ("MSW-MSA only", True, False), ("full", True, True)],
)
def test_hires_pass_runs_process_before_every_sampling_twice_and_installs_once(
    forge, model, unet, policy, hires_active, hires_raunet
):
    probe = Probe()
    opened = []
    real_open = generation.open_pass

    def spy(p, **kwargs):
        act = real_open(p, **kwargs)
        opened.append((p.is_hr_pass, act is not None))
        return act

    generation.open_pass = spy
    try:
        _, res = forge.txt2img(
            [{"enabled": True, "hires": policy}],
            steps=2,
            enable_hr=True,
            hr_scale=1.5,
            hr_cfg=7.0,
            hr_second_pass_steps=2,
            denoising_strength=0.5,
        )
    finally:
        generation.open_pass = real_open
    assert opened == [(False, True), (True, hires_active), (True, hires_active)]  # Forge: twice
    first, hires = probe.calls[:2], probe.calls[2:]
    assert all(c is not None and not c["is_hr"] and c["settings"].raunet for c in first)
    assert len(hires) == 2 and all((c is not None) == hires_active for c in hires)
    if hires_active:
        assert all(c["is_hr"] and c["settings"].raunet is hires_raunet for c in hires)
        assert {c["hooks"] for c in probe.calls} == {first[0]["hooks"]}  # one installation, not two
    assert f"HiDiffusion hires: {policy}" in res.infotexts[0]
    _no_patches(unet)


def test_img2img_pass(forge, model, unet):
    probe = Probe()
    forge.img2img([True], steps=4, denoising_strength=0.5, init_latent=torch.zeros(1, 4, 64, 72))
    assert [c["progress"] for c in probe.calls] == [(0, 3), (1, 3), (2, 3)]
    _no_patches(unet)


def test_exception_inside_sampling_leaves_nothing(forge, model, unet):
    probe = Probe()
    kmodel = model.forge_objects.unet.model
    real = kmodel.apply_model

    def failing(*args, **kwargs):
        if len(probe.calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    kmodel.apply_model = failing
    with pytest.raises(RuntimeError, match="out of memory"):
        forge.txt2img([True], steps=4)
    assert probe.active == [True, True]
    _no_patches(unet)
    kmodel.apply_model = real
    forge.txt2img([True], steps=2)
    assert probe.active[2:] == [True, True]
    _no_patches(unet)


# -- model reloads -----------------------------------------------------------------------------------
def test_model_reloads_between_and_within_generations(forge, ldm):
    unets = {}

    def checkpoint(name):
        def build():  # Forge builds a new engine (and UNet) on every reload
            unets.setdefault(name, []).append(forge_unet(ldm))
            return hybrid_engine(unets[name][-1], name)

        return build

    sd_models.available.update({"a": checkpoint("a"), "b": checkpoint("b")})
    forge.load("a", checkpoint("a"))
    probe = Probe()
    forge.txt2img([True], steps=2)
    sd_models.select_checkpoint("b")
    forge.txt2img([True], steps=2)
    assert [c["unet"] for c in probe.calls] == [unets["a"][0]] * 2 + [unets["b"][0]] * 2
    probe.calls.clear()
    # the hires pass on another checkpoint: Forge loads it between the passes
    forge.txt2img(
        [{"enabled": True, "hires": "full"}],
        steps=2,
        enable_hr=True,
        hr_scale=1.5,
        hr_cfg=7.0,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
        hr_checkpoint_name="a",
    )
    assert [c["unet"] for c in probe.calls] == [unets["b"][0]] * 2 + [unets["a"][1]] * 2
    for unet in (*unets["a"], *unets["b"]):
        _no_patches(unet)


def test_refiner_steps_run_untouched(forge, ldm):
    sd_models.available.update(
        {
            "base": lambda: hybrid_engine(forge_unet(ldm), "base"),
            "refiner": lambda: hybrid_engine(None, "refiner"),
        }
    )
    forge.load("base", sd_models.available["base"])
    probe = Probe()
    forge.txt2img([True], steps=4, refiner_checkpoint="refiner", refiner_switch_at=0.5)
    assert probe.active == [True, True, False, False]
    assert shared.sd_model.sd_checkpoint_info.name == "refiner"


# -- models HiDiffusion leaves alone ---------------------------------------------------------------
def test_flux_like_models_get_one_message_and_an_untouched_generation(forge, unet):
    flux = hybrid_engine(unet, "flux")
    flux.is_sd1 = False
    shared.sd_model = flux
    probe = Probe()
    _, res = forge.txt2img([True], steps=2)
    assert probe.active == [False, False]
    assert "have no SD 1.x/2.x/SDXL UNet" in res.comments and "HiDiffusion" not in res.infotexts[0]
    _no_patches(unet)


def test_sd2_768_v_is_native_at_768_although_forge_linears_are_not_nn_linear(forge):
    sd2 = forge_unet(zoo.build_ldm_unet("sd2", 32, heads=4, context_dim=32))
    assert not isinstance(sd2.input_blocks[1][1].proj_in, torch.nn.Linear)
    engine = Engine(hybrid_engine(sd2).forge_objects.unet.model, "sd21-768-v", kind="sd2")
    host = hosts.current()
    assert host.layout(engine, sd2).native == (64, 64)  # an eps SD 2.x (512-base)
    engine.forge_objects.unet.model.predictor.prediction_type = "v_prediction"
    assert host.layout(engine, sd2).native == (96, 96)


def test_native_size_route_reads_forges_unet(forge, unet):
    route = next(r for r in forge.app.routes if r.path == hint.ROUTE)
    shared.sd_model = hybrid_engine(unet)
    assert route.endpoint() == {"supported": True, "hint": True, "family": "sd1", "width": 512, "height": 512}
    shared.sd_model.is_sd1 = False  # Flux, SD3, ...: no hint
    assert route.endpoint()["supported"] is False


def test_token_merging_turns_mswmsa_off_with_one_message(forge, model):
    probe = Probe()
    _, res = forge.txt2img([True], steps=3, token_merging_ratio=0.5)
    assert all(c["settings"].mswmsa is False and c["settings"].raunet for c in probe.calls)
    assert "HiDiffusion MSW-MSA: False" in res.infotexts[0] and "token merging" in res.comments


# -- API, infotext, XYZ, Reload UI -----------------------------------------------------------------
def test_api_dict_args_infotext_and_paste_round_trip(forge, model):
    probe = Probe()
    args = [{"enabled": True, "preset": "sd15_2048", "t2": 0.5, "time_mode": "sigma"}]
    _, res = forge.txt2img(args, steps=2)
    s = probe.calls[0]["settings"]
    assert (s.preset, s.t2, s.t1, s.time_mode) == ("sd15_2048", 0.5, 0.4, "sigma")
    _, values = forge.paste(res.infotexts[0])
    mine = dict(zip(("enabled", "preset", "raunet", "mswmsa", "custom_timing", "t1", "t2"), values))
    assert mine == {
        "enabled": True,
        "preset": "sd15_2048",
        "raunet": True,
        "mswmsa": True,
        "custom_timing": True,
        "t1": 0.4,
        "t2": 0.5,
    }
    # Forge's paste handler (infotext_utils.py@dfdcbab:573-616): a plain infotext unticks ours only
    _, plain = forge.txt2img([False], steps=2)
    _, values = forge.paste(plain.infotexts[0])
    assert values[0] is False and all(v is None for v in values[1:14])


def test_bad_api_args_give_one_clear_line_and_an_untouched_generation(forge, model, unet):
    probe = Probe()
    _, res = forge.txt2img([{"enabled": True, "t1": 2}], steps=2)
    assert probe.active == [False, False] and "HiDiffusion" not in res.infotexts[0]
    assert "HiDiffusion argument 't1' must be a number in [0, 1], got 2" in res.comments
    _no_patches(unet)


def test_xyz_cells_and_reload_ui(forge, model, unet):
    probe = Probe()
    xyz = forge.xyz()
    cells = xyz.run_cells(forge.make_txt2img([False], steps=2), "[HiDiffusion] Enabled", ["True", "False"])
    assert ["HiDiffusion: True" in res.infotexts[0] for _, res in cells] == [True, False]
    assert probe.active == [True, True, False, False]
    hd.install(unet)  # something left installed when the user reloads
    forge.reload()
    assert hd.installed(unet) is None
    assert [o.label for o in forge.xyz().axis_options].count("[HiDiffusion] T1") == 1


def test_disable_flag_and_one_log_line_on_reforge(caplog, monkeypatch):
    env = ForgeUI(cmd_flags={"hidiffusion_disable": True})
    env.start()
    try:
        assert "HiDiffusion" not in [s.title() for s in env.runners["txt2img"].alwayson_scripts]
        assert samplers.registered() == []
    finally:
        env.stop()
        shared.reset()
    # Forge 1.x / reForge: modules_forge without backend/ -> the step-aside line
    monkeypatch.setattr(hosts, "has_module", lambda name: name == "modules_forge")
    monkeypatch.setattr(hosts, "_announced", set())
    with caplog.at_level(logging.WARNING, logger="hidiffusion"):
        assert hosts.active() is False
    assert any("reForge" in r.getMessage() for r in caplog.records)


# -- install.py on a Forge checkout ----------------------------------------------------------------
def _forge_root(tmp_path, backend=True, uncond=True):
    files = {
        "modules/scripts.py": "def process_before_every_sampling(self):\n",
        "modules/sd_samplers_cfg_denoiser.py": "need_last_noise_uncond = False\n" if uncond else "\n",
    }
    if backend:
        files["backend/nn/unet.py"] = "class IntegratedUNet2DConditionModel:\n"
        files["backend/patcher/unet.py"] = "class UnetPatcher:\n"
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / "modules_forge").mkdir()
    return str(tmp_path)


def test_install_check_on_forge_checkouts(tmp_path):
    from modules import script_loading

    check = script_loading.load_module(os.path.join(REPO, "install.py")).check
    assert check(_forge_root(tmp_path / "forge2"), "2.3.1", None) == []
    [reforge] = check(_forge_root(tmp_path / "reforge", backend=False), "2.3.1", None)
    assert "reForge / Forge 1.x" in reforge
    [old] = check(_forge_root(tmp_path / "old", uncond=False), "2.3.1", None)
    assert "sd_samplers_cfg_denoiser.py" in old and "Forge 2.x and Forge Neo" in old
