"""SD.Next's guiders (modules/modular_guiders.py@058a7f0c:28-80): picked from ``p.guidance_name``."""

from typing import Any

from modules.logger import log


def set_guider(p: Any) -> None:
    log.info(f"Guider: name={p.guidance_name}")
