"""Which WebUI hosts the extension, and whether the extension may act at all.

Each supported host is one adapter module in this package (``a1111``, and the others listed in
``_ADAPTERS``); ``current()`` picks the first whose ``detect()`` is true, A1111 being the fallback
for A1111 1.10 and forks that keep its modules. A WebUI the extension recognises but does not
support gets one log line and nothing registered (``UNSUPPORTED``). ``--hidiffusion-disable``
(preload.py) turns everything off.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

from .base import Host

__all__ = [
    "Host",
    "active",
    "current",
    "detect",
    "detect_root",
    "disabled_by_flag",
    "has_module",
    "host_classes",
    "reset",
    "unsupported_reason",
]

log = logging.getLogger("hidiffusion")

# Adapter modules, most specific first; a1111 (the fallback) last. Adding a host = a new module here.
_ADAPTERS = ("sdnext", "forge", "a1111")

# WebUIs recognised but not supported: (module whose presence identifies it, the one log line[,
# a module whose presence means it is a supported relative instead]).
UNSUPPORTED: tuple[tuple[str, ...], ...] = (
    (
        "modules_forge",
        "sd-webui-hidiffusion: reForge / Forge 1.x detected; this extension supports Forge 2.x and Forge "
        "Neo, not these (ldm_patched UNets), and stays hidden (reForge ships its own CFG++ samplers).",
        "backend.patcher.unet",  # Forge 2.x / Neo: the forge adapter
    ),
)

_current: Host | None = None
_announced: set[str] = set()


def has_module(name: str) -> bool:
    """Is ``name`` importable (without importing it)?"""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def host_classes() -> list[type[Host]]:
    """The adapter classes that exist, in detection order."""
    classes = []
    for name in _ADAPTERS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":  # that adapter is not part of this build
                continue
            raise
        classes.append(module.HOST)
    return classes


def detect() -> type[Host]:
    """The adapter class of the running WebUI (A1111 when nothing more specific matches)."""
    classes = host_classes()
    return next((cls for cls in classes if cls.detect()), classes[-1])


def current() -> Host:
    """The adapter of the running WebUI (one instance per process, until ``reset``)."""
    global _current
    if _current is None:
        _current = detect()()
    return _current


def reset() -> None:
    """Forget the detected host (tests that swap fake WebUIs)."""
    global _current
    _current = None


def disabled_by_flag() -> bool:
    """True when the WebUI was started with --hidiffusion-disable."""
    try:
        from modules import shared
    except Exception:
        return False
    return bool(getattr(getattr(shared, "cmd_opts", None), "hidiffusion_disable", False))


def unsupported_reason(webui_root: str | None = None) -> str | None:
    """The log line for a recognised WebUI this extension does not support, or None.

    ``webui_root``: look at that WebUI folder's files instead of the running WebUI (install.py).
    """
    for module, line, *supported in UNSUPPORTED:
        found = [has_module(m) if webui_root is None else _in_root(webui_root, m) for m in (module, *supported)]
        if found[0] and not any(found[1:]):
            return line
    return None


def _in_root(webui_root: str, module: str) -> bool:
    path = os.path.join(webui_root, *module.split("."))
    return os.path.isdir(path) or os.path.isfile(path + ".py")


def detect_root(webui_root: str) -> type[Host] | None:
    """The adapter class for the WebUI folder ``webui_root`` (install.py), or None."""
    return next((cls for cls in host_classes() if cls.detect_root(webui_root)), None)


def active() -> bool:
    """Should the extension register anything? Logs once why not."""
    if disabled_by_flag():
        reason: str | None = "sd-webui-hidiffusion: disabled by --hidiffusion-disable"
    else:
        reason = unsupported_reason()
    if reason is None:
        return True
    if reason not in _announced:
        _announced.add(reason)
        log.warning(reason)
    return False
