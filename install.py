"""Launch-time check of the host (run by the WebUI as a subprocess, its root on PYTHONPATH).

Installs nothing: torch and everything else the extension needs already come with the WebUI.
It prints one clear line when the WebUI or torch is too old, and stays silent otherwise.
"""

from __future__ import annotations

import os
import re
import sys

MIN_WEBUI = (1, 10)
MIN_TORCH = (2, 0)

# Text that only a WebUI with the features we rely on contains (forks keep the code, not the tags).
FEATURES = {
    ("modules", "scripts.py"): "def process_before_every_sampling",
    ("modules", "sd_samplers_cfg_denoiser.py"): "def combine_denoised",
}


def _version(text: str | None) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def check(webui_root: str, torch_version: str | None, webui_tag: str | None = None) -> list[str]:
    """Problems with this host, one line each (empty when it is fine)."""
    problems = []
    if os.path.isdir(os.path.join(webui_root, "modules_forge")):
        problems.append(
            "sd-webui-hidiffusion: Forge/reForge detected; the extension supports the AUTOMATIC1111 WebUI 1.10 "
            "and will stay hidden"
        )
        return problems
    if os.path.isfile(os.path.join(webui_root, "modules", "scripts_manager.py")):
        problems.append(
            "sd-webui-hidiffusion: SD.Next detected; use its built-in HiDiffusion (the extension stays hidden)"
        )
        return problems
    missing = []
    for parts, needle in FEATURES.items():
        path = os.path.join(webui_root, *parts)
        try:
            with open(path, encoding="utf-8") as f:
                if needle not in f.read():
                    missing.append("/".join(parts))
        except OSError:
            missing.append("/".join(parts))
    version = _version(webui_tag)
    if missing or (version is not None and version < MIN_WEBUI):
        shown = webui_tag or "unknown version"
        problems.append(
            f"sd-webui-hidiffusion: needs the AUTOMATIC1111 WebUI {MIN_WEBUI[0]}.{MIN_WEBUI[1]} or newer "
            f"(found {shown}); HiDiffusion may not turn on. Update the WebUI (git pull)."
        )
    torch_v = _version(torch_version)
    if torch_v is None or torch_v < MIN_TORCH:
        problems.append(
            f"sd-webui-hidiffusion: needs torch {MIN_TORCH[0]}.{MIN_TORCH[1]} or newer, found {torch_version}; "
            "HiDiffusion will not work. Update the WebUI's venv."
        )
    return problems


def _host() -> tuple[str, str | None, str | None]:
    root = os.getcwd()
    tag = None
    try:  # the WebUI's own helpers, importable here through PYTHONPATH
        from modules import launch_utils

        root = launch_utils.script_path
        tag = launch_utils.git_tag()
    except Exception:  # outside the WebUI, or a fork without these helpers
        pass
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:
        torch_version = None
    return root, torch_version, tag


def main() -> int:
    for line in check(*_host()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
