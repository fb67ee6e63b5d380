"""`tacq demo` end to end on a reduced setting, and its argument errors."""

import json
import sys

import pytest

from tacq_ext import cli
from tacq_ext.demo.model import ASSET_DIR

pytestmark = pytest.mark.skipif(not (ASSET_DIR / "config.json").is_file(), reason="demo checkpoint not shipped")


def run_small_demo(out):
    return cli.main(["demo", "--out", str(out), "--limit", "4", "--calib-size", "4", "--bits", "2",
                     "--methods", "rtn,tacq", "--quiet"])


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """(output directory, what it printed) of one small demo run, shared by the
    tests below."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_small_demo(out) == 0
    return out, printed.getvalue()


def test_demo_runs_end_to_end(small_demo):
    out, printed = small_demo
    assert "method" in printed and "tacq" in printed and "rtn" in printed
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [(r["method"], r["bits"]) for r in rows] == [("fp32", 32), ("rtn", 2), ("tacq", 2)]
    for r in rows:
        assert set(r["accuracy"]) == {"arith", "sql", "facts"}
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
        assert r["tokens_per_second"] > 0
    rtn, tacq = rows[1], rows[2]
    assert 2.0 < rtn["avg_bits"] < tacq["avg_bits"] < 4.0  # tacq keeps weights in fp16, rtn none
    assert tacq["size_mb"] < rows[0]["size_mb"] / 3
    assert (out / "table.txt").read_text().splitlines()[0].split()[:2] == ["calib", "method"]
    assert (out / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_without_matplotlib_writes_its_results_and_says_why_no_plot(small_demo, tmp_path, capsys, monkeypatch):
    """The same demo with matplotlib missing; its grid (quantization and
    evaluation, identical to the run above) is the run above's rows."""
    from tacq_ext.demo import command
    from tacq_ext.demo.grid import Row

    rows = [Row(**r) for r in json.loads((small_demo[0] / "results.json").read_text())["rows"]]
    monkeypatch.setattr(command, "run_grid", lambda *args, **kwargs: rows)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    out = tmp_path / "demo"
    assert run_small_demo(out) == 0
    assert "no accuracy plot: matplotlib is not installed" in capsys.readouterr().out
    assert (out / "results.json").is_file() and not (out / "accuracy_vs_bits.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--bits", "5"], "--bits"),
    (["--calib-task", "poetry"], "--calib-task"),
    (["--methods", "rtn,magic"], "--methods"),
    (["--model", "/nonexistent/model"], "no demo model checkpoint"),
    (["--limit", "0"], "limit must be positive"),
])
def test_demo_bad_input_is_named(tmp_path, capsys, argv, message):
    assert cli.main(["demo", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
