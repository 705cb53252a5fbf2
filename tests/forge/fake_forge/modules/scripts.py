"""modules.scripts: unchanged from A1111 1.10 in Forge -- the A1111 fake's code."""

from tests.forge.reuse import run_a1111_fake

run_a1111_fake("modules/scripts.py", globals())
