"""`tacq demo` end to end on a reduced setting, and its argument errors."""

import json

import pytest

from tacq_ext import cli
from tacq_ext.demo.model import ASSET_DIR

pytestmark = pytest.mark.skipif(not (ASSET_DIR / "config.json").is_file(), reason="demo checkpoint not shipped")


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--out", str(out), "--limit", "4", "--calib-size", "4", "--bits", "2",
                   "--methods", "rtn,tacq", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
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
