"""The benchmark command end to end in its smallest configuration, and its peak-memory probe."""

import json
import math
import sys
from contextlib import redirect_stdout
from io import StringIO

import pytest
import torch

from lib_hidiff.bench.__main__ import main
from lib_hidiff.bench.cases import official_available
from lib_hidiff.bench.memory import probe_for
from lib_hidiff.bench.report import COLUMNS

# --quick's model (width 32, native 16²) with a single timed round: the cheapest full run.
SMALLEST = "--quick --device cpu --threads 1 --repeats 1 --warmup 0 --sizes 1,2".split()


def _table(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    buf = StringIO()
    with redirect_stdout(buf):
        rc = main([*SMALLEST, "--out", str(out)])
    assert torch.get_num_threads() == threads  # --threads is undone for the rest of the process
    return rc, out, buf.getvalue()


def test_smallest_configuration_runs_end_to_end(run):
    rc, out, printed = run
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    (fam,) = data["families"]
    rows = fam["rows"]
    measured = [r for r in rows if not r["derived"]]
    # One progress line per case and size, then the table itself.
    assert printed.count("measured:") == len(measured)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = _table((out / "results.md").read_text())
    assert table[0] == list(COLUMNS)
    body = table[2:]
    assert len(body) == len(rows) and all(len(cells) == len(COLUMNS) for cells in body)

    for r in rows:
        assert math.isfinite(r["seconds"]) and r["seconds"] > 0, r["label"]
        assert r["finite"], r["label"]
        assert math.isfinite(r["flops"]) and r["flops"] > 0, r["label"]
        assert math.isfinite(r["full_flops"]) and r["full_flops"] > 0, r["label"]
        assert r["tensor_peak_bytes"] > 0, r["label"]
        if sys.platform.startswith("linux"):
            assert math.isfinite(r["peak_bytes"]) and r["peak_bytes"] > 0, r["label"]
        if not r["derived"]:
            assert len(r["times"]) == 1 and all(math.isfinite(t) and t > 0 for t in r["times"])


def test_cases_and_phases_per_size(run):
    _, out, _ = run
    rows = json.loads((out / "results.json").read_text())["families"][0]["rows"]
    by = {(r["mult"], r["key"]): r for r in rows}
    keys = {m: [r["key"] for r in rows if r["mult"] == m] for m in (1, 2)}
    ours = {1: ["hidiff:pass-through"], 2: ["hidiff:RAD+MSW", "hidiff:MSW"]}
    for m in (1, 2):
        want = ["vanilla", "disabled", *ours[m]]
        if official_available() is None:
            # The official code has no resolution gate: RAU-Net runs at the native size too.
            want += ["diffusers", "official:RAD+MSW", "official:MSW"]
        assert [k for k in keys[m] if not k.endswith(":mean")] == want
        assert "hidiff:mean" in keys[m]
    assert by[(2, "hidiff:RAD+MSW")]["weight"] == 20 and by[(2, "hidiff:MSW")]["weight"] == 30

    for m in (1, 2):  # installed-but-disabled and pass-through compute exactly what vanilla does
        for key in ("disabled", "hidiff:pass-through"):
            if (m, key) in by:
                assert by[(m, key)]["flops"] == by[(m, "vanilla")]["flops"]
    assert by[(2, "hidiff:RAD+MSW")]["flops"] < by[(2, "hidiff:MSW")]["flops"] < by[(2, "vanilla")]["flops"]
    if official_available() is None:  # same weights, same algorithm: the same products, counted the same
        assert by[(2, "diffusers")]["flops"] == by[(2, "vanilla")]["flops"]
        for parts in ("RAD+MSW", "MSW"):
            assert by[(2, f"official:{parts}")]["flops"] == by[(2, f"hidiff:{parts}")]["flops"]
    mean = by[(2, "hidiff:mean")]
    assert mean["seconds"] == pytest.approx(
        (20 * by[(2, "hidiff:RAD+MSW")]["seconds"] + 30 * by[(2, "hidiff:MSW")]["seconds"]) / 50
    )


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--width", "48"], "--width"),
        (["--sizes", "0,2"], "--sizes"),
        (["--family", "sd3"], "--family"),
        (["--side-scale", "2"], "--side-scale"),
        (["--device", "tpu"], "--device"),
        (["--dtype", "float8"], "--dtype"),
        (["--repeats", "two"], "--repeats"),
    ],
)
def test_bad_options_give_one_line_naming_the_option(argv, named, capsys):
    argv = ["--device", "cpu", *argv] if "--device" not in argv else argv
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own checks (choices, integers) exit
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS needs Linux /proc")
def test_cpu_peak_memory_probe_sees_a_known_allocation():
    probe = probe_for(torch.device("cpu"))
    size = 64 * 2**20

    def allocate():
        a = torch.ones(size // 4)  # 64 MiB, touched
        b = torch.ones(size // 4)  # a second 64 MiB while the first is alive: peak 128 MiB
        del a
        return b.sum()

    probe.measure(allocate)  # one-time allocations of this code path out of the way
    _, peak = probe.measure(allocate)
    assert 0.97 * 2 * size <= peak < 2 * size + 16 * 2**20
    _, small = probe.measure(lambda: torch.ones(2**20 // 4).sum())  # earlier peaks do not leak in
    assert small < 8 * 2**20
