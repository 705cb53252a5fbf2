"""Run a file of the A1111 fake (tests/webui/fake_webui) as a module of the Forge fake.

Forge keeps A1111 1.10's ``modules`` API for scripts, callbacks, options, infotext, prompts and the
UI: those fake modules are the same code. Executing the A1111 fake's source inside the Forge fake's
module namespace (instead of importing it) gives each fake its own module objects and state --
``from modules import x`` in that source binds to whichever fake is in place -- without copying.
"""

from __future__ import annotations

import os

A1111_FAKE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "webui", "fake_webui")


def run_a1111_fake(relpath: str, namespace: dict) -> None:
    """Execute ``tests/webui/fake_webui/<relpath>`` in ``namespace`` (a module's globals)."""
    path = os.path.join(A1111_FAKE, relpath)
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    doc = namespace.get("__doc__")
    exec(code, namespace)
    if doc:
        namespace["__doc__"] = doc
