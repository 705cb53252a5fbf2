"""`pip install` of this repository gives lib_hidiff, and README's diffusers examples run from it.

Built the way pip builds it for a user (`pip wheel --no-deps` on the source tree; offline: the venv's
setuptools, no build isolation), then installed with the ``diffusers`` extra into a new venv that sees
none of this repository and none of the test venv except torch. That venv gets torch as CI's does:
pip resolves ``torch==<the test venv's version>`` in the same run as the wheel, and finds it already
installed, because the venv's site-packages has a .pth naming a folder of links to the test venv's
torch and the distributions torch requires (nothing else). Copying torch instead would be a ~5.5 GB
CUDA build per run; a ``--system-site-packages`` venv would see everything else the base Python has.
Pip never uninstalls what lies outside the venv (it would install a newer version beside it), so
the test venv is never written to. The extra's
other dependencies (diffusers, transformers, ...) are resolved and installed by pip as a user's
would be, within the pins of requirements-test-diffusers-newest.txt (the release the suite also
runs on), so the run is reproducible.

Then each README section whose heading ends in "with diffusers" runs as a script in that venv, on a
tiny random pipeline (tests/packaging/readme_snippets.py says what is substituted).
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from . import readme_snippets

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
README = ROOT / "README.md"
CONSTRAINTS = ROOT / "requirements-test-diffusers-newest.txt"
DIST_NAME = "sd-webui-hidiffusion"
TORCH_LINKS = "torch-from-test-venv"  # folder of links to the test venv's torch and its requirements
EXAMPLES = readme_snippets.example_sections(README.read_text(encoding="utf-8"))


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


def _source_copy(target: Path) -> Path:
    """The repository without its venvs, git folder and caches (setuptools writes build/ and
    *.egg-info into the tree it builds; a copy keeps them out of the checkout)."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {
            name
            for name in names
            if name.startswith(".")
            or name in ("__pycache__", "build", "dist", "out", "bench-out")
            or name.endswith(".egg-info")
            or os.path.exists(os.path.join(folder, name, "pyvenv.cfg"))
        }

    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)
    return target


def _torch_closure() -> set[Path]:
    """The top-level files and folders (packages, .dist-info, .libs) of torch and of every
    distribution it requires, transitively (extras included: torch asks for cuda-toolkit[cublas,...],
    whose extras name the nvidia-* libraries), as installed in this interpreter's environment."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dists: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [("torch", "")]
    while todo:
        name, extra = todo.pop()
        name = canonicalize_name(name)
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            dist = dists[name] = dists.get(name) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # pip will say what is missing
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, "")] + [(req.name, e) for e in req.extras]
    entries = set()
    for dist in dists.values():
        for file in dist.files or []:
            top = file.parts[0]
            if top not in ("..", "__pycache__") and not top.endswith(".pth"):
                entries.add(Path(dist.locate_file(top)))
    return entries


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory(prefix="hidiff-wheel-") as folder:
        yield Path(folder)
        links = Path(folder) / TORCH_LINKS
        if links.is_dir():  # unlink first: the cleanup must never reach into the test venv
            for link in links.iterdir():
                link.unlink()


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    source = _source_copy(work / "source")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(work / "dist"),
            ".",
        ],
        timeout=300,
        cwd=source,
    )
    (built,) = (work / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(work: Path, wheel: Path) -> Path:
    """A new venv holding the wheel with its diffusers extra; torch linked in (module docstring)."""
    env_dir = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], timeout=60
        ).stdout.strip()
    )
    torch_dir = work / TORCH_LINKS
    torch_dir.mkdir()
    for entry in _torch_closure():
        (torch_dir / entry.name).symlink_to(entry)
    (site / "hidiff-ci-torch.pth").write_text(f"{torch_dir}\n", encoding="utf-8")
    install = [
        *(
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-input",
            "--progress-bar",
            "off",
        ),
        *(f"{wheel}[diffusers]", f"torch=={metadata.version('torch')}", "-c", str(CONSTRAINTS)),
    ]
    _run(install, timeout=900, cwd=work)
    return python


def _clean_env(work: Path) -> dict[str, str]:
    """No path of this repository or the test venv; offline hub; one thread for tiny models."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(work / "hf-home"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def test_wheel_holds_only_the_library(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_string(zf.read(meta_name).decode())
    tops = {name.split("/")[0] for name in names}
    assert tops == {"lib_hidiff", meta_name.split("/")[0]}, sorted(tops)  # no scripts/, tests/, ...
    packages = {
        str(p.parent.relative_to(ROOT))
        for p in (ROOT / "lib_hidiff").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    packaged = {os.path.dirname(n) for n in names if n.endswith("/__init__.py")}
    assert packages == packaged, sorted(packages ^ packaged)
    assert meta["Name"] == DIST_NAME
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("torch") and "extra" not in r for r in requires), requires
    assert "diffusers" in meta.get_all("Provides-Extra")
    assert any(r.startswith("diffusers") and 'extra == "diffusers"' in r for r in requires), requires
    assert not any(r.startswith("diffusers") and "extra" not in r for r in requires), "diffusers is optional"


def test_installed_library_imports_from_the_wheel(venv: Path, work: Path):
    probe = """
import importlib, importlib.metadata as md, importlib.util, json, os, sys, sysconfig
import lib_hidiff, lib_hidiff.diffusers, torch, diffusers
names = {}
for module in (lib_hidiff, lib_hidiff.diffusers):
    for name in module._EXPORTS:
        names[module.__name__ + "." + name] = type(getattr(module, name)).__name__
print(json.dumps({
    "lib_hidiff": lib_hidiff.__file__, "torch": torch.__file__, "torch_version": md.version("torch"),
    "diffusers": diffusers.__version__, "prefix": sys.prefix, "names": names,
    "site_entries": sorted(os.listdir(sysconfig.get_path("purelib"))),
    "tops": sorted({f.parts[0] for f in md.files(sys.argv[1])}),
    "stray": [m for m in ("scripts", "tests", "install", "preload", "javascript") if importlib.util.find_spec(m)],
}))
"""
    out = _run([str(venv), "-c", probe, DIST_NAME], timeout=300, cwd=work, env=_clean_env(work)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    prefix = os.path.realpath(result["prefix"])
    assert os.path.realpath(result["lib_hidiff"]).startswith(prefix + os.sep), result["lib_hidiff"]
    assert not os.path.realpath(result["lib_hidiff"]).startswith(str(ROOT) + os.sep)
    assert result["torch_version"] == metadata.version("torch")  # the linked torch, not a new one
    assert not os.path.realpath(result["torch"]).startswith(prefix + os.sep), "pip installed another torch"
    # torch's own and its GPU libraries (GBs); a small pure-Python requirement may be updated there
    copied = {"torch", "nvidia", "triton", "cuda"} & set(result["site_entries"])
    assert not copied, f"pip copied torch's libraries into the new venv: {sorted(copied)}"
    assert result["diffusers"] == _pinned("diffusers")
    assert len(result["names"]) >= 10 and all(result["names"].values()), result["names"]
    assert result["stray"] == [] and not ({"scripts", "tests", "javascript"} & set(result["tops"])), result


def _pinned(name: str) -> str:
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.split("==")[1].split()[0]
    raise AssertionError(f"{CONSTRAINTS.name} pins no {name}")


def test_readme_has_its_diffusers_examples():
    assert "Use with diffusers" in EXAMPLES, f"README sections with diffusers examples: {sorted(EXAMPLES)}"
    empty = [title for title, code in EXAMPLES.items() if not code.strip()]
    assert not empty, f"README sections named '... with diffusers' without a ```python block: {empty}"


@pytest.mark.parametrize("section", sorted(EXAMPLES))
def test_readme_example_runs_from_the_wheel(venv: Path, work: Path, section: str):
    assets = work / "assets"
    if not assets.exists():
        _run(
            [str(venv), str(HERE / "tiny_pipeline.py"), str(assets)],
            timeout=600,
            cwd=work,
            env=_clean_env(work),
        )
    script = readme_snippets.adapt(EXAMPLES[section], str(assets / "pipeline"), str(assets / "photo.png"))
    run_dir = work / ("run-" + "".join(c if c.isalnum() else "-" for c in section))
    run_dir.mkdir()
    (run_dir / "example.py").write_text(script, encoding="utf-8")
    _run([str(venv), "example.py"], timeout=900, cwd=run_dir, env=_clean_env(work))
