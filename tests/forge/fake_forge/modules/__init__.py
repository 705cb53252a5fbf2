"""A small fake of Forge 2.x's ``modules`` package (lllyasviel/stable-diffusion-webui-forge dfdcbab).

Files whose API Forge keeps from A1111 1.10 run the A1111 fake's code (tests/forge/reuse.py);
the others mirror Forge's own signatures and the behaviour the extension can observe (written for
these tests, nothing copied).
"""
