"""SD.Next's error reporting (modules/errors.py@058a7f0c): ``display(e, task)`` logs and goes on."""

from __future__ import annotations

from modules.logger import log

reported: list[tuple[str, BaseException]] = []  # (task, exception), for tests


class ValidationError(Exception):
    pass


def display(e: BaseException, task: str, suppress: list | None = None) -> None:
    reported.append((task, e))
    log.error(f"{task}: {type(e).__name__}: {e}")
