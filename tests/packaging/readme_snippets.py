"""README's diffusers examples, made runnable on a tiny random pipeline on the CPU.

Every README section whose heading ends in "with diffusers" ("Use with diffusers", "Edit with
diffusers", ...) is an example a user copies. Its fenced ```python blocks (the section's own text,
up to the next heading of any level) run as one script, after these substitutions, made on the
syntax tree so that any example written in the usual diffusers style keeps working:

* the model id given to any ``*.from_pretrained(...)`` becomes the folder of a tiny random SD 1.5
  layout pipeline (tests/packaging/tiny_pipeline.py); ``variant=`` is dropped (it is saved without);
* ``torch.float16`` / ``bfloat16`` / ``half`` become ``torch.float32``; the device strings
  ``"cuda"``, ``"cuda:N"`` and ``"mps"`` become ``"cpu"``; ``enable_model_cpu_offload()`` and the
  like become no-ops;
* ``height=`` / ``width=`` above 64 become 64, and a two-int size tuple passed to ``.resize`` becomes
  (64, 64);
* ``load_image(...)`` and ``Image.open(...)`` read a 64 px test picture instead of their argument;
* ``hidiffusion(...)`` / ``attach_hidiffusion(...)`` get ``native=16`` (unless given), so that
  64 px counts as above the native size, as a 2048 px image does for SD 1.5.

What the substitutions cannot cover (a URL left over, an SDXL pipeline class) fails with a message
naming it, never silently; a model id read from anywhere else fails offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import ast
import re

EXAMPLE_HEADING = re.compile(r"with diffusers$", re.I)
SIZE = 64  # pixels; the tiny VAE halves it once: a 32x32 latent
NATIVE = 16  # latent side passed as hidiffusion(native=...)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_GPU_DEVICE = re.compile(r"^(cuda(:\d+)?|mps)$")
_LOW_PRECISION = {"float16", "bfloat16", "half"}
_OFFLOAD = {
    "enable_model_cpu_offload",
    "enable_sequential_cpu_offload",
    "enable_xformers_memory_efficient_attention",
}
_HIDIFFUSION_CALLS = {"hidiffusion", "attach_hidiffusion"}
_URL = re.compile(r"https?://")
_XL = re.compile(r"XL\w*Pipeline")  # the tiny pipeline has SD 1.5's layout


def sections(readme: str) -> dict[str, str]:
    """Heading title -> the section's own text (up to the next heading of any level).

    Lines inside fenced code blocks are never headings (a ``# comment`` in a block is code)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    fence: str | None = None
    for line in readme.splitlines():
        opener = _FENCE.match(line)
        if fence is None and opener is None:
            heading = _HEADING.match(line)
            if heading:
                current = found.setdefault(heading.group(2), [])
                continue
        if opener is not None:
            marker = opener.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence):
                fence = None
        if current is not None:
            current.append(line)
    return {title: "\n".join(lines) for title, lines in found.items()}


def python_blocks(text: str) -> list[str]:
    """The fenced ```python (or ```py) blocks of a piece of Markdown, in order."""
    blocks: list[str] = []
    fence: str | None = None
    language = ""
    body: list[str] = []
    for line in text.splitlines():
        opener = _FENCE.match(line)
        if fence is None:
            if opener is not None:
                fence, language, body = opener.group(1), opener.group(2).lower(), []
        elif opener is not None and opener.group(1).startswith(fence) and not opener.group(2):
            if language in ("python", "py"):
                blocks.append("\n".join(body) + "\n")
            fence = None
        else:
            body.append(line)
    return blocks


def example_sections(readme: str) -> dict[str, str]:
    """Heading -> the joined python blocks of every section whose heading ends in "with diffusers"."""
    return {
        title: "\n".join(python_blocks(text))
        for title, text in sections(readme).items()
        if EXAMPLE_HEADING.search(title)
    }


def _name(node: ast.AST) -> str:
    """The name a Name, an attribute access or an imported name stands for ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.alias):
        return node.name.rsplit(".", 1)[-1]
    return ""


def _is_image_open(func: ast.expr) -> bool:
    """``Image.open`` / ``PIL.Image.open`` (not the builtin ``open``)."""
    return isinstance(func, ast.Attribute) and func.attr == "open" and _name(func.value) == "Image"


class _Adapter(ast.NodeTransformer):
    def __init__(self, model_dir: str, image_path: str):
        self.model_dir = model_dir
        self.image_path = image_path

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, str) and _GPU_DEVICE.match(node.value):
            return ast.copy_location(ast.Constant("cpu"), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr in _LOW_PRECISION and _name(node.value) == "torch":
            node.attr = "float32"
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if isinstance(node.value, ast.Call) and _name(node.value.func) in _OFFLOAD:
            return ast.copy_location(ast.Pass(), node)
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = _name(node.func)
        if name == "from_pretrained":
            if node.args:  # a literal model id or a variable holding one
                node.args[0] = ast.Constant(self.model_dir)
            node.keywords = [k for k in node.keywords if k.arg != "variant"]
            for k in node.keywords:
                if k.arg == "pretrained_model_name_or_path":
                    k.value = ast.Constant(self.model_dir)
        elif name == "load_image" or _is_image_open(node.func):
            node.args = [ast.Constant(self.image_path)]
        elif name == "resize" and node.args and isinstance(node.args[0], ast.Tuple):
            node.args[0] = ast.Tuple([ast.Constant(SIZE), ast.Constant(SIZE)], ast.Load())
        elif name in _HIDIFFUSION_CALLS and not any(k.arg == "native" for k in node.keywords):
            node.keywords.append(ast.keyword("native", ast.Constant(NATIVE)))
        for k in node.keywords:
            if k.arg in ("height", "width") and isinstance(k.value, ast.Constant):
                if isinstance(k.value.value, int) and k.value.value > SIZE:
                    k.value = ast.Constant(SIZE)
        return node


def adapt(code: str, model_dir: str, image_path: str) -> str:
    """The example, rewritten to run on the tiny pipeline on the CPU (see the module docstring).

    Raises ValueError naming what is left that would need a download or a GPU."""
    tree = ast.fix_missing_locations(_Adapter(model_dir, image_path).visit(ast.parse(code)))
    leftovers = sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _URL.search(node.value)
        }
        | {_name(node) for node in ast.walk(tree) if _XL.search(_name(node))}
    )
    if leftovers:
        raise ValueError(
            f"the README example still needs {leftovers} after the substitutions of "
            "tests/packaging/readme_snippets.py; extend them or write the example in the usual form"
        )
    return ast.unparse(tree) + "\n"
