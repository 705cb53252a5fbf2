"""modules.shared: the A1111 fake's opts / cmd_opts / state / sd_model, minus what Forge 2.x lacks
(no Hypertile in Forge; its ToMe options stay), plus the sampler option get_sigmas reads."""

# ruff: noqa: F821 -- names defined by the A1111 fake's file executed below

from tests.forge.reuse import run_a1111_fake

run_a1111_fake("modules/shared.py", globals())

for _key in ("hypertile_enable_unet", "hypertile_enable_unet_secondpass"):
    BUILTIN_OPTIONS.pop(_key, None)
BUILTIN_OPTIONS["always_discard_next_to_last_sigma"] = OptionInfo(False)  # dfdcbab shared_options.py:409
reset()
