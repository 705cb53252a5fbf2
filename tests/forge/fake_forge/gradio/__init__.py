"""gradio for the Forge fake: the A1111 fake's stand-in (Forge 2.x ships gradio 4.40 but pops
``tooltip=`` from components the same way, modules/gradio_extensions.py)."""

from tests.forge.reuse import run_a1111_fake

run_a1111_fake("gradio/__init__.py", globals())
