"""SD.Next's script loading (modules/script_loading.py@058a7f0c:15-33).

A module is named after its file; while it imports, stdout is captured and each printed line is
logged as ``Extension: script='...' <line>``; then ``setup_logging()`` rebuilds the log handlers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re

from modules import errors
from modules.logger import log, setup_logging


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            spec.loader.exec_module(module)
        setup_logging()
        for line in stdout.getvalue().splitlines():
            if line:
                clean = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                log.info(f"Extension: script='{os.path.relpath(path)}' {clean}")
    except Exception as e:
        errors.display(e, f"Module load: {path}")
    return module
