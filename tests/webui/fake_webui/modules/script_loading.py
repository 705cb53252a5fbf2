"""modules.script_loading: a script file becomes a module named after its file (not in sys.modules)."""

import importlib.util
import os

loaded_scripts = {}


def load_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module
