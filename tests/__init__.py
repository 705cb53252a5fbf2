"""The test suite's package.

The repository root holds ComfyUI's custom-node ``__init__.py``, so pytest (any import mode) sees
the checkout itself as a package when its folder name is an identifier (``main``, ``i18``; not
``sd-webui-hidiffusion``) and imports this folder as ``<checkout>.tests``, while the tests import
each other as ``tests.…`` (fake hosts, shared helpers). One module must not exist twice under two
names (fakehost's active fake, the fakes' state): here every ``tests.…`` import resolves to the
module pytest loads as ``<checkout>.tests.…``, the same object under both names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

if __name__ != "tests":
    _REAL = __name__

    class _SameModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """``tests.x`` is ``<checkout>.tests.x``: imported once, registered under both names."""

        def find_spec(self, name, path=None, target=None):
            if name != "tests" and not name.startswith("tests."):
                return None
            return importlib.util.spec_from_loader(name, self)

        def create_module(self, spec):
            return importlib.import_module(_REAL + spec.name[len("tests") :])

        def exec_module(self, module):
            return None

    sys.modules.setdefault("tests", sys.modules[__name__])
    sys.meta_path.insert(0, _SameModule())
