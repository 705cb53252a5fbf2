"""Hosts the extension steps aside on, the disable flag, and the launch-time files."""

from __future__ import annotations

import argparse
import configparser
import importlib.machinery
import logging
import os
import subprocess
import sys
import types

import pytest
from modules import errors, script_callbacks, script_loading

from lib_hidiff.webui import hosts, samplers
from lib_hidiff.webui.hosts.a1111 import A1111Host

from .webui_env import REPO, WebUI


def _titles(env):
    return [s.title() for s in env.runners["txt2img"].alwayson_scripts]


def _our_callbacks():
    return [
        c
        for callbacks in script_callbacks.callback_map.values()
        for c in callbacks
        if "lib_hidiff" in c.script
    ]


@pytest.fixture
def fresh_announcements(monkeypatch):
    monkeypatch.setattr(hosts, "_announced", set())


def _fake_module(monkeypatch, name):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize(
    ("module", "words"),
    [
        ("modules_forge", ["Forge", "reForge"]),
    ],
)
def test_other_hosts_import_cleanly_and_hide_with_one_log_line(
    monkeypatch, caplog, fresh_announcements, module, words
):
    _fake_module(monkeypatch, module)
    env = WebUI()
    with caplog.at_level(logging.WARNING, logger="hidiffusion"):
        env.start()
    try:
        assert errors.reported == []  # the script files imported without error
        assert "HiDiffusion" not in _titles(env) and "CFG++ samplers" not in _titles(env)
        assert samplers.registered() == [] and _our_callbacks() == []
        lines = [r.getMessage() for r in caplog.records if r.name == "hidiffusion"]
        assert len(lines) == 1 and all(w in lines[0] for w in words)
    finally:
        env.stop()


def test_detects_a1111_by_default(webui):
    assert hosts.detect() is A1111Host and isinstance(hosts.current(), A1111Host)
    assert {c.callback.__name__ for c in _our_callbacks()} == {
        "on_cfg_denoiser",
        "on_model_loaded",
        "on_unload",
        "add_axes",
        "add_hidiffusion_options",
        "add_route",
        "on_infotext_pasted",
        "add_cfgpp_options",
        "unregister",
    }


def test_disable_flag_turns_everything_off(fresh_announcements):
    env = WebUI(cmd_flags={"hidiffusion_disable": True})
    env.start()
    try:
        assert "HiDiffusion" not in _titles(env)
        assert samplers.registered() == [] and _our_callbacks() == []
    finally:
        env.stop()


def test_preload_adds_the_flag_without_importing_the_library():
    module = script_loading.load_module(os.path.join(REPO, "preload.py"))
    parser = argparse.ArgumentParser()
    module.preload(parser)
    assert parser.parse_args([]).hidiffusion_disable is False
    assert parser.parse_args(["--hidiffusion-disable"]).hidiffusion_disable is True
    with open(os.path.join(REPO, "preload.py"), encoding="utf-8") as f:
        assert "lib_hidiff" not in f.read()


def test_metadata_names_the_extension():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "metadata.ini"))
    assert config["Extension"]["Name"] == "sd-webui-hidiffusion"


@pytest.fixture
def install_module():
    return script_loading.load_module(os.path.join(REPO, "install.py"))


def _webui_root(tmp_path, hook=True, forge=False, sdnext=False):
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "scripts.py").write_text(
        "def process_before_every_sampling(self):\n" if hook else "pass\n"
    )
    (tmp_path / "modules" / "sd_samplers_cfg_denoiser.py").write_text("def combine_denoised(self):\n")
    if forge:
        (tmp_path / "modules_forge").mkdir()
    if sdnext:
        (tmp_path / "modules" / "scripts_manager.py").write_text("")
    return str(tmp_path)


def test_install_check(install_module, tmp_path):
    check = install_module.check
    assert check(_webui_root(tmp_path), "2.1.2+cu121", "v1.10.1") == []
    [old] = check(str(tmp_path), "2.1.2", "v1.9.4")
    assert "1.10 or newer" in old and "v1.9.4" in old


def test_install_check_without_the_hook_or_with_old_torch(install_module, tmp_path):
    problems = install_module.check(_webui_root(tmp_path, hook=False), "1.13.1", None)
    assert len(problems) == 2
    assert "1.10 or newer" in problems[0] and "torch 2.0 or newer, found 1.13.1" in problems[1]


@pytest.mark.parametrize(("kind", "word"), [("forge", "Forge"), ("sdnext", "SD.Next")])
def test_install_check_names_other_hosts(install_module, tmp_path, kind, word):
    [line] = install_module.check(_webui_root(tmp_path, **{kind: True}), "2.1.2", None)
    assert word in line


def test_install_runs_as_the_webui_runs_it(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "install.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "1.10 or newer" in done.stdout  # tmp_path is no WebUI: one clear line, no traceback
    assert "Traceback" not in done.stderr
