"""comfy/utils.py: the progress-bar switch the sampler nodes read."""

PROGRESS_BAR_ENABLED = False
