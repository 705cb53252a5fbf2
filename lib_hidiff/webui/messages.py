"""Messages to the user about one generation: shown once each, where this host shows them.

A message goes to the host's console (``hosts.current().log``) and to the generation info under
the image (``p.comment``). Each is shown once per generation, however many passes or hooks raise
it.
"""

from __future__ import annotations

from typing import Any

from . import hosts

__all__ = ["P_NOTES", "note", "reset"]

P_NOTES = "_hidiffusion_notes"  # messages already shown for this generation


def reset(p: Any) -> None:
    """A new generation (or XYZ cell) starts: nothing shown yet."""
    setattr(p, P_NOTES, set())


def note(p: Any, message: str) -> None:
    """Show ``message`` once for this generation."""
    notes = getattr(p, P_NOTES, None)
    if notes is None:
        notes = set()
        setattr(p, P_NOTES, notes)
    if message in notes:
        return
    notes.add(message)
    hosts.current().log(message)
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(message)
