"""SD.Next's folders (modules/paths.py@058a7f0c): the fake's root is this fake package's folder."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
extensions_dir = os.path.join(script_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
