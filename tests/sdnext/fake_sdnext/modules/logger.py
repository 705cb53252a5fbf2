"""SD.Next's logging (modules/logger.py@058a7f0c): one "sd" logger with its own handlers.

What matters to an extension (logger.py:21, :236, :240-275): SD.Next logs through
``logging.getLogger("sd")``; ``setup_logging()`` sets the root logger to ERROR (with a null handler)
and rebuilds the "sd" handlers -- it runs again after every script import
(script_loading.py:28). A warning on any other logger is therefore not shown. Here the "sd"
handler keeps the records it shows in ``records`` (the visible console).
"""

from __future__ import annotations

import logging

log = logging.getLogger("sd")
records: list[logging.LogRecord] = []  # what SD.Next's console showed


class _Console(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        records.append(record)


def setup_logging() -> None:
    """As SD.Next: fresh handlers on "sd", the root logger at ERROR."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
    console = _Console(level=logging.INFO)
    log.addHandler(console)
    log.setLevel(logging.DEBUG)
    logging.getLogger().setLevel(logging.ERROR)


def shown(level: int = logging.INFO) -> list[str]:
    """The messages the console showed at ``level`` or above (tests)."""
    return [r.getMessage() for r in records if r.levelno >= level]
