"""The README example extraction and its substitutions (tests/packaging/readme_snippets.py)."""

import ast

import pytest

from .readme_snippets import adapt, example_sections, python_blocks, sections

MARKDOWN = """# Title

## Use with diffusers

Intro.

```python
# a comment line is no heading
x = 1
```

```bash
pip install thing
```

### Subsection

```python
not_in_the_section = True
```

## Edit with diffusers

````python
y = 2
```
still = "in the block"
````

## Other

```py
z = 3
```
"""


def test_sections_end_at_any_heading_and_skip_code_comments():
    found = sections(MARKDOWN)
    assert list(found) == ["Title", "Use with diffusers", "Subsection", "Edit with diffusers", "Other"]
    assert "not_in_the_section" not in found["Use with diffusers"]
    assert python_blocks(found["Use with diffusers"]) == ["# a comment line is no heading\nx = 1\n"]
    assert python_blocks(found["Other"]) == ["z = 3\n"]


def test_example_sections_are_the_with_diffusers_headings():
    examples = example_sections(MARKDOWN)
    assert list(examples) == ["Use with diffusers", "Edit with diffusers"]
    assert examples["Edit with diffusers"] == 'y = 2\n```\nstill = "in the block"\n'


EXAMPLE = """
import torch
from diffusers import AutoPipelineForImage2Image, StableDiffusionPipeline
from diffusers.utils import load_image
from PIL import Image
from lib_hidiff.diffusers import hidiffusion, attach_hidiffusion

model = "some-org/some-model"
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16, variant="fp16").to("cuda")
edit = AutoPipelineForImage2Image.from_pretrained("org/other", torch_dtype=torch.bfloat16)
pipe.enable_model_cpu_offload()
g = torch.Generator(device="cuda:0").manual_seed(0)
init = load_image("https://example.com/cat.png").resize((768, 512))
photo = Image.open("mine.jpg")
with hidiffusion(pipe, seed=0):
    out = pipe("p", height=2048, width=1536, generator=g)
undo = attach_hidiffusion(pipe, native=48)
small = pipe("p", height=32)
"""


def test_adapt_substitutes_model_device_sizes_images_and_native():
    code = adapt(EXAMPLE, "/tiny/pipe", "/tiny/photo.png")
    tree = ast.parse(code)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "cuda" not in code and "float16" not in code and "variant" not in code
    assert "enable_model_cpu_offload" not in code
    assert (
        "pipe = StableDiffusionPipeline.from_pretrained('/tiny/pipe', torch_dtype=torch.float32).to('cpu')"
        in code
    )
    assert "AutoPipelineForImage2Image.from_pretrained('/tiny/pipe', torch_dtype=torch.float32)" in code
    assert "load_image('/tiny/photo.png').resize((64, 64))" in code
    assert "Image.open('/tiny/photo.png')" in code
    assert "hidiffusion(pipe, seed=0, native=16)" in code
    assert "attach_hidiffusion(pipe, native=48)" in code  # a given native stays
    assert "height=64, width=64" in code and "height=32" in code  # only sizes above 64 shrink
    assert "torch.Generator(device='cpu:0')" not in code and "device='cpu'" in code
    assert not any(s.startswith("http") for s in strings)


@pytest.mark.parametrize(
    "code, left",
    [
        ("import requests\nrequests.get('https://example.com/x')\n", "https://example.com/x"),
        ("from diffusers import StableDiffusionXLPipeline\n", "StableDiffusionXLPipeline"),
    ],
)
def test_adapt_names_what_it_cannot_substitute(code, left):
    with pytest.raises(ValueError, match=left.replace(".", r"\.")):
        adapt(code, "/tiny/pipe", "/tiny/photo.png")
