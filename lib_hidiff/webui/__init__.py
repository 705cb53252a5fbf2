"""WebUI adapters: the only part of lib_hidiff that knows a WebUI exists.

Every module imports the WebUI's ``modules`` (and gradio) inside functions only, so the package
imports cleanly without a WebUI; ``scripts/*.py`` import these modules at their top, while the
extension root is on ``sys.path``.
"""
