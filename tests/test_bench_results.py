"""bench/common.py's results files on a machine without matplotlib (the lent
GPU image): the table and the JSON are written, the plot is left for later,
and `bench/run.py --plot` draws it from the JSON."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def common(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_common", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS_DIR", tmp_path)
    return module


def rows(common):
    return [common.Row("mixed_gemv", "28672x8192", 2, 1, 1e-4, {"F.linear fp16": 6e-4}, 60_000_000, "per row"),
            common.Row("quantize", "8192x8192", 3, None, 2e-3, {"torch reference": 5e-2})]


def test_results_without_matplotlib_keep_the_table_and_say_how_to_plot(common, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    common.write_results("cuda-kernels", rows(common), "cpu", 3.0e12, "python bench/run.py --device cuda")
    assert (tmp_path / "cuda-kernels.md").read_text().count("mixed_gemv") == 1
    assert (tmp_path / "cuda-kernels.json").exists() and not (tmp_path / "cuda-kernels.png").exists()
    assert ("no plot: matplotlib is not installed; on a machine with it: "
            "python bench/run.py --plot bench/results/cuda-kernels.json") in capsys.readouterr().out


def test_the_plot_is_drawn_later_from_the_json(common, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "matplotlib", None)
        common.write_results("cuda-kernels", rows(common), "cpu", 3.0e12, "python bench/run.py --device cuda")
    png = common.plot_results(tmp_path / "cuda-kernels.json")
    assert png == tmp_path / "cuda-kernels.png" and png.stat().st_size > 1000
