"""The effective schedule: the pure function against the patcher, the read-only route, the warning
once per generation, the infotext record, and the accordion's JavaScript hint.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re

import pytest
import torch
from modules import script_callbacks, shared

import lib_hidiff.unet as hd
from lib_hidiff.unet.patcher import Session
from lib_hidiff.unet.presets import HiDiffusionSettings as S
from lib_hidiff.webui import generation, hint, infotext, messages, schedule

from .webui_env import REPO, HybridModel, tiny_sd15_unet, tiny_unet


@pytest.fixture(scope="module")
def layouts():
    sd1 = hd.inspect_unet(tiny_sd15_unet())
    sdxl = hd.inspect_unet(tiny_unet("sdxl"))
    return {"sd1": sd1, "sdxl": sdxl, "sdxl-inpaint": dataclasses.replace(sdxl, in_channels=9)}


@pytest.fixture
def model(webui):
    shared.sd_model = HybridModel(tiny_sd15_unet(), "base")
    return shared.sd_model


# -- the pure function agrees with the patcher ------------------------------------------------------
CASES = [
    ("sd1", 1024, 1024, S(), range(1, 31), 1),
    ("sd1", 2048, 2048, S(), range(1, 31), 1),  # auto -> sd15_2048: RAD T1 0.7, CA T2 0.3
    ("sd1", 1536, 1024, S(preset="sd15_2048", t2=0.45), range(1, 25), 2),  # second-order clock
    ("sd1", 1024, 1024, S(msw_start=0.2, msw_end=0.7, raunet=False), range(1, 25), 1),
    ("sdxl", 2048, 2048, S(), range(1, 51), 1),  # aggressive: RAD first 8/50, then CA to 0.4
    ("sdxl", 4096, 4096, S(), range(1, 31), 1),  # auto -> sdxl_4096
    ("sdxl", 2048, 1536, S(preset="sdxl_turbo"), range(1, 9), 1),
    ("sdxl", 2048, 2048, S(aggressive=0.3, t1=0.5), range(1, 21), 2),
    ("sdxl-inpaint", 2048, 2048, S(), range(1, 21), 1),  # inpainting: no aggressive phase
]


@pytest.mark.parametrize(("layout", "width", "height", "settings", "step_counts", "calls_per_step"), CASES)
def test_every_tick_matches_the_patchers_plan(
    layouts, layout, width, height, settings, step_counts, calls_per_step
):
    lay = layouts[layout]
    latent = (height // 8, width // 8)
    for steps in step_counts:
        total = steps * calls_per_step
        sched = schedule.pass_schedule(lay, width, height, settings, steps, total)
        assert sched.active and sched.row.key == schedule.row_for(settings.preset, lay.family, latent).key
        for tick in range(total):
            plan = Session(settings, lambda tick=tick, total=total: (tick, total), 0).plan(lay, latent, None)
            assert (plan.rad_on, plan.ca_on, plan.msw_on) == (
                tick in sched.rad.ticks,
                tick in sched.ca.ticks,
                tick in sched.msw.ticks,
            ), (steps, tick)


def test_active_is_the_patchers_resolution_gate(layouts):
    unet = tiny_sd15_unet()
    lay = layouts["sd1"]
    inst = hd.install(unet, lay)
    try:
        inst.activate(S(), progress=lambda: (0, 10))
        for width, height in ((512, 512), (576, 512), (512, 504), (384, 704), (1024, 256)):
            inst._begin(unet.input_blocks[0], (torch.zeros(1, 4, height // 8, width // 8),))
            assert (inst.call is not None) is schedule.pass_schedule(lay, width, height, S(), 10).active
    finally:
        hd.uninstall(unet)


def test_a_preset_of_the_other_family_is_refused_as_by_the_patcher():
    with pytest.raises(hd.SettingsError, match="for SDXL models"):
        schedule.pass_schedule("sd1", 1024, 1024, S(preset="sdxl_2048"), 20)


# -- what users read -----------------------------------------------------------------------------------
CLOSING_NOTE = {
    "sd15_1024_20": "1024×1024, 20 steps, SD 1.x: preset auto → sd15_1024 — RAU-Net steps 1–8 of 20, "
    "MSW-MSA all steps",
    "sdxl_2048_30": "2048×2048, 30 steps, SDXL: preset auto → sdxl_2048 — RAU-Net steps 1–12 of 30 "
    "(RAD/RAU 1–4, CA 5–12), MSW-MSA all steps",
    "turbo_hires_4": "1024×1024, SDXL: not above the native 1024×1024, HiDiffusion changes nothing; "
    "hires pass 2048×2048, 4 steps, SDXL: preset sdxl_turbo — RAU-Net steps 1–2 of 4, MSW-MSA all steps",
}


def schedule_route(webui):
    route = next(r for r in webui.app.routes if r.path == hint.SCHEDULE_ROUTE)
    assert route.methods == ["GET"]
    return route.endpoint


def test_hint_texts_of_the_closing_note(webui, model):
    ask = schedule_route(webui)
    assert ask(width=1024, height=1024, steps=20)["text"] == CLOSING_NOTE["sd15_1024_20"]  # loaded SD1
    assert ask(family="sdxl", width=2048, height=2048, steps=30)["text"] == CLOSING_NOTE["sdxl_2048_30"]
    turbo = ask(
        family="sdxl",
        width=1024,
        height=1024,
        steps=4,
        preset="sdxl_turbo",
        enable_hr=True,
        hr_scale=2.0,
        hires="full",
    )
    assert turbo["text"] == CLOSING_NOTE["turbo_hires_4"] and turbo["warnings"] == []
    base, hires = turbo["passes"]
    assert (base["active"], hires["active"], hires["row"]) == (False, True, "sdxl_turbo")
    assert hires["raunet"]["steps"] == [[1, 2]] and hires["raunet"]["ca"]["model_calls"] == 2
    assert hires["raunet"]["rad"]["steps"] == [] and hires["mswmsa"]["steps"] == [[1, 4]]
    off = ask(family="sdxl", width=1024, height=1024, steps=4, preset="sdxl_turbo", enable_hr=True)
    assert off["text"].endswith("hires pass 2048×2048: HiDiffusion off (Hires fix pass: off)")


def test_a_part_on_no_step_is_warned_with_the_rule_and_a_way_out():
    sched = schedule.pass_schedule("sd1", 1024, 1024, S(), 2)
    assert sched.warnings() == [
        "RAU-Net runs on no step of this pass (2 steps: official rule int(2 × 0.4) = 0); "
        "use at least 3 steps or a larger T1"
    ]
    assert "RAU-Net on no step of 2" in sched.describe()
    msw = schedule.pass_schedule("sd1", 1024, 1024, S(msw_start=0.5, msw_end=0.52), 20)
    (line,) = msw.warnings()
    assert "int(20 × 0.5) = 10, int(20 × 0.52) = 10" in line and "at least 25 steps" in line
    for sched in (msw, schedule.pass_schedule("sd1", 1024, 1024, S(t1=0.15), 4)):
        need = int(re.search(r"at least (\d+) steps", sched.warnings()[-1]).group(1))
        at = [
            schedule.pass_schedule("sd1", 1024, 1024, sched.settings, n).warnings() for n in (need - 1, need)
        ]
        assert at[0] and not at[1]  # the advice is the smallest step count that works
    # Second-order samplers: 2 steps are 4 model calls, int(4 × 0.4) = 1: RAU-Net gets the first call.
    assert schedule.pass_schedule("sd1", 1024, 1024, S(), 2, 4).warnings() == []
    # Not above the native size, or by model time (sigma mode): no step count to warn about.
    assert schedule.pass_schedule("sd1", 512, 512, S(), 2).warnings() == []
    assert schedule.pass_schedule("sd1", 1024, 1024, S(time_mode="sigma"), 2).warnings() == []


def test_the_record_says_what_differs_from_the_preset():
    # Rounding to whole steps is the official rule: 30 SDXL steps give RAD/RAU 4 of the nominal 4.8.
    assert schedule.pass_schedule("sdxl", 2048, 2048, S(), 30).record() is None
    assert schedule.pass_schedule("sd1", 1024, 1024, S(), 20).record() is None
    assert schedule.pass_schedule("sd1", 1024, 1024, S(), 2).record() == "2 steps: RAD/RAU none, MSW-MSA 1-2"
    # A sub-part the preset means to run vanishes while RAU-Net still runs: recorded, not warned.
    sdxl4 = schedule.pass_schedule("sdxl", 2048, 2048, S(), 4)
    assert sdxl4.record() == "4 steps: RAD/RAU none, CA 1, MSW-MSA 1-4" and sdxl4.warnings() == []
    assert "RAU-Net step 1 of 4 (RAD/RAU none, CA 1)" in sdxl4.describe()
    # A window set empty on purpose (T2 = 0 in sd15_1024) is not a difference.
    assert schedule.pass_schedule("sd1", 1024, 1024, S(mswmsa=False), 20).record() is None


# -- the route -----------------------------------------------------------------------------------------
def test_route_reads_the_loaded_model_and_validates_like_the_api(webui, model):
    ask = schedule_route(webui)
    assert [r.path for r in webui.app.routes].count(hint.SCHEDULE_ROUTE) == 1
    default = ask()  # the loaded model's native size, 20 steps
    assert default["supported"] and default["family"] == "sd1" and default["passes"][0]["width"] == 512
    assert default["text"] == "512×512, SD 1.x: not above the native 512×512, HiDiffusion changes nothing"
    assert ask(t1="2")["error"] == "HiDiffusion argument 't1' must be a number in [0, 1], got '2'"
    assert ask(preset="sdxl_2048")["error"].startswith("HiDiffusion preset 'sdxl_2048' is for SDXL models")
    assert "'family'" in ask(family="sd3")["error"]
    assert ask(raunet="false", mswmsa="false", width=1024)["text"].endswith(
        "HiDiffusion off (RAU-Net and MSW-MSA off)"
    )
    assert ask(enabled="false")["text"] == "HiDiffusion is off"
    # custom timing by naming T1, as in the API's dict
    assert "RAU-Net steps 1–5 of 20" in ask(width=1024, height=1024, steps=20, t1="0.25")["text"]
    second_order = ask(width=1024, height=1024, steps=10, sampler="DPM++ 2S a CFG++")["passes"][0]
    assert (second_order["steps"], second_order["model_calls"]) == (10, 20)
    img2img = ask(width=1024, height=1024, steps=20, denoising=0.75)
    assert img2img["passes"][0]["steps"] == 16 and "img2img runs 16 of 20 steps" in img2img["text"]
    shared.opts.data["img2img_fix_steps"] = True
    assert ask(width=1024, height=1024, steps=20, denoising=0.75)["passes"][0]["steps"] == 20
    shared.opts.data["hidiffusion_size_hint"] = False
    assert ask(width=1024)["hint"] is False  # the UI shows nothing; API clients still get the data
    shared.sd_model = None
    assert ask(width=1024)["supported"] is False and "family=" in ask(width=1024)["reason"]


def test_every_bad_query_value_gets_the_documented_answer(webui, model):
    """FastAPI answers 422 for a value that does not fit a typed parameter (``steps: int``, "x"):
    every parameter is text, checked by the route, so a bad value is one line naming it."""
    ask = schedule_route(webui)
    params = inspect.signature(ask).parameters
    assert {p.annotation for p in params.values()} == {"str | None"}
    assert all(p.default is None for p in params.values())
    for name, (kind, _, low, high) in hint.NUMBERS.items():
        for bad in (
            "x",
            "nan",
            "inf",
            str(low - 1),
            *(["2.5"] if kind is int else []),
            *([] if high > 9e9 else [str(high + 1)]),
        ):
            answer = ask(**{name: bad})
            assert answer == {"supported": False, "hint": True, "error": answer["error"]}, (name, bad)
            what = "an integer" if kind is int else "a number"
            assert answer["error"].startswith(f"HiDiffusion schedule: {name!r} must be {what} "), answer
            assert answer["error"].endswith(f"got {bad!r}")
    assert (
        ask(denoising="1.5")["error"]
        == "HiDiffusion schedule: 'denoising' must be a number in [0, 1], got '1.5'"
    )
    assert ask(steps="x")["error"] == "HiDiffusion schedule: 'steps' must be an integer >= 1, got 'x'"
    assert (
        ask(enable_hr="maybe")["error"]
        == "HiDiffusion schedule: 'enable_hr' must be true or false, got 'maybe'"
    )
    assert ask(raunet="maybe")["error"].startswith("HiDiffusion argument 'raunet'")
    # checked whatever else the query says: HiDiffusion off, or no model loaded
    assert "error" in ask(enabled="false", steps="x") and "error" in ask(hr_steps="-1")
    shared.sd_model = None
    assert "error" in ask(width="x")
    # good text values still work
    shared.sd_model = model
    good = ask(width="1024", height="1024", steps="20", enable_hr="true", hr_scale="1.5", hires="full")
    assert good["supported"] and [p["pass"] for p in good["passes"]] == ["base", "hires"]


def test_img2img_size_zero_means_the_init_image_size_not_an_error(webui, model):
    """SD.Next's img2img width/height fields default to 0 ("keep the init image's size"): the hint
    says so instead of showing an error; in txt2img 0 stays a bad value."""
    ask = schedule_route(webui)
    for size in ({"width": "0", "height": "0"}, {"width": "0", "height": "768"}):
        answer = ask(**size, steps="20", denoising="0.75")
        assert answer["supported"] and "error" not in answer, answer
        assert answer["text"].startswith("img2img at the init image's size") and answer["passes"] == []
    assert "error" in ask(width="0", height="0", steps="x", denoising="0.75")  # the rest still checked
    assert ask(width="0", steps="20")["error"].startswith("HiDiffusion schedule: 'width' must be an integer")
    assert ask(width="1024", height="1024", denoising="0.75")["passes"]  # a set size: the schedule


def test_hires_size_follows_the_webui():
    assert hint.hires_size(512, 768, 2.0) == (1024, 1536)
    assert hint.hires_size(512, 768, 2.0, 1024, 0) == (1024, 1536)
    assert hint.hires_size(512, 768, 2.0, 0, 1024) == (682, 1024)
    assert hint.hires_size(512, 768, 2.0, 1024, 1024) == (1024, 1536)  # fills, then crops the height


def test_route_predicts_the_clock_the_generation_runs(webui, model):
    """What the route says before a generation is what the sampler's clock then does."""
    ask = schedule_route(webui)
    seen = []
    script_callbacks.on_cfg_denoised(lambda params: seen.append(generation.current().progress()))
    for kwargs, img2img in (
        ({"steps": 5}, False),
        ({"steps": 3, "sampler_name": "DPM++ 2S a CFG++"}, False),
        ({"steps": 7, "denoising_strength": 0.6}, True),
    ):
        seen.clear()
        if img2img:
            webui.img2img([True], width=1024, height=1024, init_latent=torch.zeros(1, 4, 128, 128), **kwargs)
        else:
            webui.txt2img([True], width=1024, height=1024, **kwargs)
        predicted = ask(
            width=1024,
            height=1024,
            steps=kwargs["steps"],
            sampler=kwargs.get("sampler_name"),
            denoising=kwargs.get("denoising_strength"),
        )["passes"][0]
        assert {total for _, total in seen} == {predicted["model_calls"]}, kwargs
        assert [step for step, _ in seen] == list(range(len(seen)))


# -- during a generation ---------------------------------------------------------------------------------
def test_warned_once_per_generation_and_recorded_in_the_infotext(webui, model):
    _, res = webui.txt2img([True], steps=2, width=1024, height=1024, batch_size=1, n_iter=2)
    (line,) = res.comments.splitlines()
    assert line.startswith("HiDiffusion: RAU-Net runs on no step of this pass (2 steps")
    assert messages.api_messages(res.extra_generation_params) == [line]
    assert all('HiDiffusion schedule: "2 steps: RAD/RAU none, MSW-MSA 1-2"' in t for t in res.infotexts)

    _, fine = webui.txt2img([True], steps=3, width=1024, height=1024)
    assert fine.comments == "" and "HiDiffusion schedule" not in fine.infotexts[0]
    # The check reads the sampler's real clock: a second-order sampler's 2 steps are 4 model calls.
    _, second = webui.txt2img([True], steps=2, width=1024, height=1024, sampler_name="DPM++ 2S a CFG++")
    assert second.comments == "" and "HiDiffusion schedule" not in second.infotexts[0]
    # Sigma time mode has no step count to check.
    _, sigma = webui.txt2img([{"enabled": True, "time_mode": "sigma"}], steps=2, width=1024, height=1024)
    assert sigma.comments == ""


def test_hires_pass_is_checked_on_its_own_clock(webui, model):
    _, res = webui.txt2img(
        [{"enabled": True, "hires": "full"}],
        steps=3,
        enable_hr=True,
        hr_scale=2.0,
        hr_second_pass_steps=2,
        denoising_strength=1.0,
    )
    # 1152×1024 px: auto picks sd15_1024 (T1 0.4); the first pass (3 steps) gets step 1.
    assert res.comments.splitlines() == [
        "HiDiffusion: RAU-Net runs on no step of this hires pass (2 steps: official rule int(2 × 0.4) = 0); "
        "use at least 3 hires steps or a larger T1"
    ]
    assert "HiDiffusion schedule:" not in res.infotexts[0]
    assert 'HiDiffusion hires schedule: "2 steps: RAD/RAU none, MSW-MSA 1-2"' in res.infotexts[0]


def test_the_record_does_not_change_what_paste_restores(webui, model):
    args = [{"enabled": True, "preset": "sd15_1024", "mswmsa": False}]
    _, short = webui.txt2img(args, steps=2, width=1024, height=1024)
    _, long = webui.txt2img(args, steps=20, width=1024, height=1024)
    assert "HiDiffusion schedule" in short.infotexts[0] and "HiDiffusion schedule" not in long.infotexts[0]
    script = webui.script()
    restored = [
        webui.paste(res.infotexts[0])[1][: script.args_to - script.args_from] for res in (short, long)
    ]
    assert restored[0] == restored[1]
    # Pasting the image and generating again records the same schedule (XYZ cells too: no stale key).
    _, again = webui.txt2img(restored[0], steps=2, width=1024, height=1024)
    assert again.infotexts[0] == short.infotexts[0]
    params = dict(short.extra_generation_params)
    infotext.remove(params)
    assert not any(k.startswith("HiDiffusion") and k != messages.API_KEY for k in params)


# -- the JavaScript hint ---------------------------------------------------------------------------------
def test_javascript_asks_the_schedule_route_with_names_it_accepts(webui):
    with open(os.path.join(REPO, "javascript", "hidiffusion.js"), encoding="utf-8") as f:
        js = f.read()
    assert f'const ROUTE = "./{hint.SCHEDULE_ROUTE.lstrip("/")}";' in js
    accepted = set(inspect.signature(hint._schedule).parameters)
    block = js[js.index("const q = {") : js.index("const model")]
    sent = set(re.findall(r"^\s*(\w+):", block, re.M)) | set(re.findall(r"q\.(\w+) =", block))
    assert sent and sent <= accepted | {"t1", "t2", "aggressive"} and {"t1", "t2", "aggressive"} <= accepted
    ours = {getattr(c, "elem_id", None) for c in webui.runners["txt2img"].inputs}
    used = {f"script_txt2img_hidiffusion_{n}" for n in re.findall(r'ours\("(\w+)"\)', js)}
    assert used and all(i in ours or f"{i}-checkbox" in ours for i in used)
    assert "script_${tab}_hidiffusion_size_hint" in js and "hidiffusion_enabled-visible-checkbox" in js


def test_hint_is_a_line_of_its_own_under_the_title(webui):
    """Not in the accordion's one-line header (InputAccordion.extra()), where A1111 1.10.1 cut a long
    hint and its warning off: the first element inside the accordion, with a stable id and class."""
    import gradio as gr

    gr.created.clear()
    webui.script().ui(False)
    ids = [getattr(c, "elem_id", None) for c in gr.created]
    assert "script_txt2img_hidiffusion_enabled-extra" not in ids  # no header extra at all
    at = ids.index("script_txt2img_hidiffusion_size_hint")
    assert ids[at - 1] == "script_txt2img_hidiffusion_enabled"  # right after the accordion opens
    assert "hidiffusion-size-hint" in gr.created[at].elem_classes
    with open(os.path.join(REPO, "style.css"), encoding="utf-8") as f:
        css = f.read()
    assert "white-space: normal" in css.split(".hidiffusion-size-hint {")[1].split("}")[0]


_HINT_HARNESS = r"""
const fs = require("fs");
const [file, answer] = [process.argv[1], JSON.parse(process.argv[2])]; // node -e: no script path
const el = (id, extra) => ({id, children: [], textContent: "", ...extra,
    replaceChildren(...kids) { this.children = kids; }});
const els = {
    "script_txt2img_hidiffusion_size_hint": el("hint"),
    "script_txt2img_hidiffusion_enabled-visible-checkbox": el("box", {tagName: "INPUT", checked: true}),
};
let loaded = null, asked = null;
globalThis.gradioApp = () => ({
    getElementById: (id) => els[id] || null,
    querySelector: (sel) => els[sel.slice(1).split(" ")[0]] || null,
});
globalThis.document = {createElement: () => ({className: "", textContent: ""})};
globalThis.onUiLoaded = (fn) => { loaded = fn; };
globalThis.onAfterUiUpdate = globalThis.onOptionsChanged = () => {};
globalThis.fetch = async (url) => { asked = url; return {ok: true, json: async () => answer}; };
eval(fs.readFileSync(file, "utf8"));
loaded();
setTimeout(() => {
    const hint = els["script_txt2img_hidiffusion_size_hint"];
    console.log(JSON.stringify({asked, lines: hint.children.map((c) => [c.className, c.textContent])}));
}, 50);
"""


def _run_hint_script(answer: dict) -> dict:
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    out = subprocess.run(
        [node, "-e", _HINT_HARNESS, os.path.join(REPO, "javascript", "hidiffusion.js"), json.dumps(answer)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return json.loads(out)


def test_javascript_shows_the_route_answer_whole_one_line_each(webui, model):
    """The hint shows the schedule and each warning in full, on lines of their own."""
    ask = schedule_route(webui)
    answer = ask(width="1024", height="1024", steps="2")
    assert answer["warnings"] and answer["warnings"][0].startswith("RAU-Net runs on no step of this pass")
    shown = _run_hint_script(answer)
    assert shown["asked"].startswith("./hidiffusion/schedule?")
    assert shown["lines"] == [
        ["hidiffusion-hint-text", answer["text"]],
        *[["hidiffusion-hint-warning", f"⚠ {w}"] for w in answer["warnings"]],
    ]
    bad = ask(steps="x")
    assert _run_hint_script(bad)["lines"] == [["hidiffusion-hint-error", bad["error"]]]
    assert _run_hint_script({**answer, "hint": False})["lines"] == []  # the setting turns it off
