"""Launch-time check of the host (run by the WebUI as a subprocess, its root on PYTHONPATH).

Installs nothing: torch and everything else the extension needs already come with the WebUI.
It prints one clear line per problem (a WebUI or torch too old, a WebUI this extension does not
support) and stays silent otherwise. What each WebUI needs is its host adapter's to say
(lib_hidiff/webui/hosts).
"""

from __future__ import annotations

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # some WebUIs run this file with the extension folder as cwd, not on the path
    sys.path.insert(0, HERE)

MIN_TORCH = (2, 0)


def _version(text: str | None) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def check(webui_root: str, torch_version: str | None, webui_tag: str | None = None) -> list[str]:
    """Problems with this host, one line each (empty when it is fine)."""
    from lib_hidiff.webui import hosts

    reason = hosts.unsupported_reason(webui_root)
    if reason is not None:
        return [reason]
    problems = []
    host = hosts.detect_root(webui_root)
    if host is None:
        host = hosts.host_classes()[-1]  # not a WebUI folder we know: judge it as A1111
    problems += host.install_problems(webui_root, torch_version, webui_tag)
    torch_v = _version(torch_version)
    if torch_v is None or torch_v < MIN_TORCH:
        problems.append(
            f"sd-webui-hidiffusion: needs torch {MIN_TORCH[0]}.{MIN_TORCH[1]} or newer, found {torch_version}; "
            "HiDiffusion will not work. Update the WebUI's venv."
        )
    return problems


def _root_on_pythonpath() -> str | None:
    """The WebUI folder on PYTHONPATH that a host adapter recognises (SD.Next runs this file with the
    extension folder as cwd and its own root on PYTHONPATH, and has no launch_utils)."""
    from lib_hidiff.webui import hosts

    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and hosts.detect_root(entry) is not None:
            return entry
    return None


def _host() -> tuple[str, str | None, str | None]:
    root = os.getcwd()
    tag = None
    try:  # the WebUI's own helpers, importable here through PYTHONPATH
        from modules import launch_utils

        root = launch_utils.script_path
        tag = launch_utils.git_tag()
    except Exception:  # outside the WebUI, or a fork without these helpers
        root = _root_on_pythonpath() or root
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
