"""Messages reach the console, the UI and HTTP API clients -- and never an image's infotext.

The API answers ``/sdapi/v1/txt2img`` with ``info = Processed.js()`` (A1111 1.10.1), which has
no comments: the fake's ``Processed.js()`` mirrors it, and these tests read what an API client
reads, ``json.loads(info)["extra_generation_params"]``.
"""

from __future__ import annotations

import json
import logging

import pytest
from modules import infotext_utils, processing, shared

from lib_hidiff.webui import hosts, messages

from .webui_env import HybridModel, tiny_sd15_unet

KEY = messages.API_KEY


@pytest.fixture(scope="module")
def unet():
    return tiny_sd15_unet()


@pytest.fixture
def model(webui, unet):
    shared.sd_model = HybridModel(unet, "base")
    return shared.sd_model


def api_info(res) -> dict:
    """What an API client gets: the response's ``info`` string, parsed."""
    return json.loads(res.js())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([{"enabled": True, "t1": 2}], "HiDiffusion argument 't1' must be a number in [0, 1], got 2"),
        ([True, "auto", "maybe"], "HiDiffusion argument 'raunet' must be true or false, got 'maybe'"),
        ([{"enabled": True, "preset": "sdxl_2048"}], "'sdxl_2048' is for SDXL models"),
    ],
)
def test_bad_api_input_reaches_the_api_response_but_not_the_image(webui, model, args, message, caplog):
    with caplog.at_level(logging.WARNING, logger="hidiffusion"):
        _, res = webui.txt2img(args, steps=3)
    info = api_info(res)
    lines = info["extra_generation_params"][KEY].splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].endswith("generating without HiDiffusion")
    assert lines[0] in res.comments  # under the image in the UI
    assert any(lines[0] in r.getMessage() for r in caplog.records)  # and in the console
    # Not in the image: its infotext and PNG info have no HiDiffusion key at all.
    for text in (res.infotexts[0], *info["infotexts"]):
        assert "HiDiffusion" not in text
    assert "HiDiffusion" not in str(infotext_utils.parse_generation_parameters(res.infotexts[0]))


def test_a_normal_generation_adds_no_key(webui, model):
    _, res = webui.txt2img([True], steps=3)
    assert api_info(res)["extra_generation_params"] == {
        "HiDiffusion": True,
        "HiDiffusion preset": "auto",
        "HiDiffusion RAU-Net": True,
        "HiDiffusion MSW-MSA": True,
    }
    assert res.comments == ""
    _, off = webui.txt2img([False], steps=3)
    assert api_info(off)["extra_generation_params"] == {}


def test_each_message_once_per_generation_in_order(webui, model):
    shared.opts.data["hypertile_enable_unet"] = True  # turns MSW-MSA off, with a message
    _, res = webui.txt2img([True], steps=2, batch_size=1, n_iter=2)  # 2 steps: RAU-Net gets none
    lines = api_info(res)["extra_generation_params"][KEY].splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["Hypertile", "RAU-Net"]
    assert res.comments.splitlines() == lines  # the same lines, once each, under the image
    assert all("Hypertile" not in t and KEY not in t for t in res.infotexts)


def test_messages_of_xyz_cells_accumulate_once_each(webui, model):
    # Cells share extra_generation_params and comments (copy(p) is shallow), as in the WebUI.
    xyz = webui.xyz()
    p = webui.make_txt2img([True], steps=2)
    cells = xyz.run_cells(p, "[HiDiffusion] Enabled", ["True", "False", "True"])
    lines = api_info(cells[-1][1])["extra_generation_params"][KEY].splitlines()
    assert len(lines) == 1 and "RAU-Net runs on no step" in lines[0]
    assert all(KEY not in res.infotexts[0] for _, res in cells)


def test_the_api_value_is_left_out_of_every_infotext_and_written_as_a_string(webui):
    p = processing.StableDiffusionProcessingTxt2Img(steps=2)
    p.all_seeds = [1]
    messages.reset(p)
    messages.note(p, "HiDiffusion: first")
    messages.note(p, "HiDiffusion: second")
    messages.note(p, "HiDiffusion: first")  # already shown: nothing changes
    value = p.extra_generation_params[KEY]
    assert isinstance(value, str) and value == "HiDiffusion: first\nHiDiffusion: second"
    assert value(p=p, index=0) is None  # what create_infotext does with a callable value
    assert KEY not in processing.create_infotext(p)
    assert json.loads(json.dumps({"v": value}, default=lambda o: None))["v"] == value
    assert messages.api_messages(p.extra_generation_params) == ["HiDiffusion: first", "HiDiffusion: second"]
    assert list(p.comments) == ["HiDiffusion: first", "HiDiffusion: second"]


def test_a_host_adapter_can_route_messages_its_own_way(webui, model, monkeypatch):
    host = hosts.current()
    seen, logged = [], []
    monkeypatch.setattr(host, "report", lambda p, message: seen.append(message), raising=False)
    monkeypatch.setattr(host, "log", logged.append)
    _, res = webui.txt2img([{"enabled": True, "t1": 2}], steps=2)
    assert len(seen) == 1 and seen == logged and "'t1'" in seen[0]
    assert KEY not in api_info(res)["extra_generation_params"] and res.comments == ""
