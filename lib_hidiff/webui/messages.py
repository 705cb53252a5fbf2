"""Messages to the user about one generation: shown once each, wherever the user looks.

A message (a bad argument, an unsupported model, a feature that turns part of HiDiffusion off, a
part that runs on no step) goes to

* the console: ``hosts.current().log``;
* the UI, under the image: ``p.comment`` (the WebUI shows ``Processed.comments`` there);
* HTTP API clients: the ``"HiDiffusion messages"`` entry of ``p.extra_generation_params``, one
  message per line. ``/sdapi/v1/txt2img`` and ``img2img`` answer with ``info = Processed.js()``,
  which holds ``extra_generation_params`` but not the comments (A1111 1.10.1
  modules/processing.py ``Processed.js``), so this is the one place an API client can read it.

That entry must not end up in the images' infotext (PNG info, paste): its value is a ``str`` that
is also callable and returns None. ``create_infotext`` calls callable values and leaves out
those that give None (its documented contract), while ``json.dumps`` writes a ``str`` subclass as
a plain string. The key exists only when a message was shown. XYZ cells share their
``extra_generation_params`` and their comments (``copy(p)`` is shallow), so a grid's messages
accumulate in both, each line once.

A host whose infotext writer does not call callable values routes messages differently by
overriding its adapter's ``Host.report(p, message)`` (which is :func:`deliver` by default).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from . import hosts

__all__ = ["API_KEY", "P_NOTES", "ApiText", "api_messages", "deliver", "note", "reset"]

P_NOTES = "_hidiffusion_notes"  # messages already shown for this generation
API_KEY = "HiDiffusion messages"


class ApiText(str):
    """Text for API clients only: JSON writes it as a string, create_infotext leaves it out."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None  # create_infotext(p, ...) calls callable values; None drops the key


def reset(p: Any) -> None:
    """A new generation (or XYZ cell) starts: nothing shown yet."""
    setattr(p, P_NOTES, set())


def api_messages(params: Any) -> list[str]:
    """The messages recorded for API clients in an ``extra_generation_params`` mapping."""
    value = params.get(API_KEY) if isinstance(params, MutableMapping) else None
    return str(value).splitlines() if value else []


def deliver(p: Any, message: str) -> None:
    """Put ``message`` under the image (``p.comment``) and in the API's ``info``."""
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(message)
    params = getattr(p, "extra_generation_params", None)
    if isinstance(params, MutableMapping):
        lines = api_messages(params)
        if message not in lines:
            params[API_KEY] = ApiText("\n".join([*lines, message]))


def note(p: Any, message: str) -> None:
    """Show ``message`` once for this generation: console, UI and API."""
    notes = getattr(p, P_NOTES, None)
    if notes is None:
        notes = set()
        setattr(p, P_NOTES, notes)
    if message in notes:
        return
    notes.add(message)
    host = hosts.current()
    host.log(message)
    host.report(p, message)
