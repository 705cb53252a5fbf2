"""One fake WebUI at a time: several host fakes in one pytest run.

Every host fake (A1111 in tests/webui, Forge in tests/forge, SD.Next in tests/sdnext) defines its
own top-level ``modules`` (and ``gradio``, ``backend``, ...) packages. Python has one
``sys.modules``, so a :class:`FakeHost` owns a folder of fake packages and swaps them in and out:

* at collection time, a test package's ``conftest.py`` calls ``FAKE.activate()`` before its test
  modules run ``from modules import ...``, so each test module binds the objects of its own fake:
  once when the conftest loads and again, through ``pytest_collectstart = FAKE.collect_hook()``,
  before each of its test modules is imported (pytest loads the conftests of every path given on
  the command line before collecting any module, so the last one loaded would win otherwise);
* at run time, a package-scoped autouse fixture (``FAKE.fixture()``) activates it again, because
  the extension's glue imports ``modules`` inside functions, through ``sys.modules``.

Activating one fake stashes the modules of whichever fake was active (and its sys.path entry) and
restores this fake's stash, so each fake keeps its state (callbacks, sampler lists) across swaps.
The extension's own ``lib_hidiff.webui`` modules are host-neutral at import and are not swapped;
their host caches are reset on every swap (``lib_hidiff.webui.hosts.reset``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

# Top-level names any host fake may define; a real package of these names is never installed here.
FAKE_ROOTS = ("modules", "modules_forge", "backend", "gradio", "ldm_patched", "scripts")

_active: FakeHost | None = None


def _owned(name: str) -> bool:
    return name.split(".", 1)[0] in FAKE_ROOTS


class FakeHost:
    """A folder of fake host packages that can be put in place and taken out again."""

    def __init__(self, name: str, root: str):
        self.name = name
        self.root = root  # folder holding the fake top-level packages
        self._stash: dict[str, object] = {}

    def activate(self) -> None:
        global _active
        if _active is self:
            return
        if _active is not None:
            _active._deactivate()
        sys.modules.update(self._stash)
        self._stash = {}
        if self.root not in sys.path:
            sys.path.insert(0, self.root)
        _active = self
        _reset_host_caches()

    def _deactivate(self) -> None:
        global _active
        self._stash = {k: m for k, m in sys.modules.items() if _owned(k)}
        for k in self._stash:
            del sys.modules[k]
        while self.root in sys.path:
            sys.path.remove(self.root)
        _active = None

    def fixture(self):
        """A package-scoped autouse fixture that keeps this fake in place while its tests run."""

        @pytest.fixture(scope="package", autouse=True)
        def _fake_host() -> Iterator[FakeHost]:
            self.activate()
            yield self

        return _fake_host

    def collect_hook(self):
        """A ``pytest_collectstart`` hook for the package's conftest.py: this fake is in place while
        pytest imports the package's test modules (conftest hooks only see their own directory)."""

        def pytest_collectstart(collector) -> None:
            if isinstance(collector, pytest.Module):
                self.activate()

        return pytest_collectstart

    @property
    def active(self) -> bool:
        return _active is self


def _reset_host_caches() -> None:
    hosts = sys.modules.get("lib_hidiff.webui.hosts")
    if hosts is not None:
        hosts.reset()
