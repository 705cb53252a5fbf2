"""gradio for the SD.Next fake: the same tiny stand-in the A1111 fake uses (SD.Next pins gradio 3.43.2,
whose component API matches 3.41 for everything the extension touches). Loaded from the A1111 fake's
file so there is one copy of it; this package is swapped in and out with the rest of the fake.
"""

import importlib.util as _util
import os as _os

_PATH = _os.path.join(
    _os.path.dirname(__file__), "..", "..", "..", "webui", "fake_webui", "gradio", "__init__.py"
)
_spec = _util.spec_from_file_location("_sdnext_fake_gradio", _os.path.abspath(_PATH))
_impl = _util.module_from_spec(_spec)
_spec.loader.exec_module(_impl)
globals().update({k: v for k, v in vars(_impl).items() if not k.startswith("__")})


class components:  # noqa: N801 -- gradio.components, which SD.Next's setup_ui checks against
    IOComponent = _impl.IOComponent
    Component = _impl.Block
