"""modules.infotext_utils: the A1111 fake's code. Forge dfdcbab changed image reading, Civitai/Flux
repairs in the parser and the VAE/TE override settings, but not the paste handler: ``connect_paste``
(infotext_utils.py@dfdcbab:573-616) is A1111 1.10.1's line for line (callable keys, ``gr.update``
dicts used as they are at :598-599, the same value conversion), and ``connect_paste_params_buttons``
(:150-195) copies the fields named in ``paste_field_names`` as A1111 does."""

from tests.forge.reuse import run_a1111_fake

run_a1111_fake("modules/infotext_utils.py", globals())
