"""The extension in a fake SD.Next: detection, loading, settings, logging, reloads, install.py."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys

from modules import errors, processing_diffusers, script_callbacks, shared, ui_components

from lib_hidiff.webui import hosts, samplers
from lib_hidiff.webui.args import FIELDS
from lib_hidiff.webui.hosts.sdnext import SDNextHost

from .sdnext_env import REPO, shown

OUR_TITLES = {"HiDiffusion", "CFG++ samplers"}


def _our_callbacks():
    return [
        c
        for callbacks in script_callbacks.callback_map.values()
        for c in callbacks
        if "lib_hidiff" in c.script
    ]


def _wrapped_depth(fn) -> int:
    depth = 0
    while getattr(fn, "_hidiffusion_wraps", None) is not None:
        fn, depth = fn._hidiffusion_wraps, depth + 1
    return depth


def test_loads_cleanly_with_the_same_controls_as_in_a1111(sdnext):
    assert isinstance(hosts.current(), SDNextHost)
    assert errors.reported == []
    for tab in ("txt2img", "img2img"):
        runner = sdnext.runner(tab)
        assert OUR_TITLES <= {s.title() for s in runner.alwayson_scripts}
        script = sdnext.script(tab=tab)
        components = runner.inputs[script.args_from : script.args_to]
        assert len(components) == len(FIELDS)  # the same positional API args as in A1111
        assert isinstance(components[0], ui_components.InputAccordion)
        assert components[0].accordion.elem_id == f"script_{tab}_hidiffusion_enabled"
        assert [a.label for a in script.api_info.args][:4] == ["HiDiffusion", "Preset", "RAU-Net", "MSW-MSA"]
    assert "hidiffusion_default_preset" in shared.opts.data_labels  # settings page
    assert "cfgpp_scale_mode" in shared.opts.data_labels


def test_messages_reach_sdnext_log_and_the_bridge_goes_with_the_script(sdnext):
    logging.getLogger("lib_hidiff.diffusers").warning("from the diffusers layer")
    logging.getLogger("hidiffusion").warning("from the glue")
    assert {"from the diffusers layer", "from the glue"} <= set(shown())
    sdnext.stop()
    logging.getLogger("hidiffusion").warning("after unload")
    assert "after unload" not in shown()
    sdnext.start()  # (the fixture stops it again)


def test_reload_neither_stacks_nor_loses_anything(sdnext):
    before = sorted(c.callback.__name__ for c in _our_callbacks())
    rows = sdnext.dropdown()
    sdnext.load_model()
    for _ in range(2):
        sdnext.txt2img([True], steps=1)  # SD.Next's pass functions are wrapped at the first generation
        sdnext.reload()
    sdnext.txt2img([True], steps=1)
    assert sorted(c.callback.__name__ for c in _our_callbacks()) == before
    assert {"_before_process", "_after_process", "_repair_pasted", "_disconnect"} <= set(before)
    assert _wrapped_depth(processing_diffusers.process_pre) == 1
    assert _wrapped_depth(processing_diffusers.process_post) == 1
    assert sdnext.dropdown() == rows
    assert samplers.registered() == ["Euler CFG++", "Euler a CFG++", "DPM++ 2M CFG++", "DDIM CFG++"]


def test_unload_gives_sdnext_its_functions_back(sdnext):
    assert _wrapped_depth(processing_diffusers.process_pre) == 0  # nothing touched while extensions load
    sdnext.load_model()
    sdnext.txt2img([True], steps=1)
    assert _wrapped_depth(processing_diffusers.process_pre) == 1
    sdnext.stop()
    assert _wrapped_depth(processing_diffusers.process_pre) == 0
    assert _wrapped_depth(processing_diffusers.process_post) == 0
    assert "Euler CFG++" not in sdnext.dropdown()
    sdnext.start()


def test_disabled_by_flag_registers_nothing(sdnext, monkeypatch):
    sdnext.stop()
    monkeypatch.setattr(hosts, "_announced", set())
    shared.cmd_opts.hidiffusion_disable = True
    original = processing_diffusers.process_pre
    sdnext._load()
    try:
        assert not OUR_TITLES & {s.title() for s in sdnext.runner().alwayson_scripts}
        assert _our_callbacks() == [] and processing_diffusers.process_pre is original
        assert "Euler CFG++" not in sdnext.dropdown()
    finally:
        shared.cmd_opts.hidiffusion_disable = False


def _sdnext_root(tmp_path, complete=True):
    (tmp_path / "modules").mkdir(parents=True)
    (tmp_path / "modules" / "scripts.py").write_text("from modules.scripts_manager import *\n")
    (tmp_path / "modules" / "scripts_manager.py").write_text("class ScriptRunner:\n    pass\n")
    (tmp_path / "modules" / "sd_samplers_diffusers.py").write_text("samplers_data_diffusers = []\n")
    post = "def process_post(p):\n" if complete else "def process_diffusers(p):\n"
    (tmp_path / "modules" / "processing_diffusers.py").write_text(post)
    return tmp_path


def _install_module():
    spec = importlib.util.spec_from_file_location("_install_under_test", os.path.join(REPO, "install.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_check_on_sdnext(tmp_path):
    install = _install_module()
    root = _sdnext_root(tmp_path / "ok")
    assert hosts.detect_root(str(root)) is SDNextHost
    assert install.check(str(root), "2.14.1", None) == []
    [line] = install.check(str(_sdnext_root(tmp_path / "old", complete=False)), "2.14.1", None)
    assert "SD.Next" in line and "processing_diffusers.py" in line


def test_install_runs_as_sdnext_runs_it(tmp_path):
    # installer.py:1081-1087: cwd = the extension folder, PYTHONPATH = SD.Next's root.
    root = _sdnext_root(tmp_path / "sdnext")
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "install.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert done.stdout == ""  # recognised as SD.Next (not judged as an old A1111): nothing to say
