"""SD.Next's compatibility module (modules/scripts.py@058a7f0c:1-19): re-exports scripts_manager."""

from modules import scripts_manager
from modules.scripts_manager import *  # noqa: F403

scripts_txt2img = None
scripts_img2img = None
scripts_control = None


def register_runners():
    global scripts_txt2img, scripts_img2img, scripts_control
    scripts_txt2img = scripts_manager.scripts_txt2img
    scripts_img2img = scripts_manager.scripts_img2img
    scripts_control = scripts_manager.scripts_control
