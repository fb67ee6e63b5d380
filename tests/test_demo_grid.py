"""The demo grid as an instrument: --full's test sizes, calibration seeds and
per-row regime, and rows summarized over seeds as mean ± sd."""

import argparse

import pytest

from tacq_ext.demo import measure
from tacq_ext.demo.command import _add_demo, settings_from
from tacq_ext.demo.grid import GridSettings, Row, format_table, run_grid
from tacq_ext.demo.model import ASSET_DIR, load_demo_model
from tacq_ext.demo.tasks import TEST_SEED, load_split


def _settings(argv):
    p = argparse.ArgumentParser()
    _add_demo(p)
    return settings_from(p.parse_args(argv))


def test_full_grid_has_400_test_examples_3_seeds_and_per_row_2_bits():
    full = _settings(["--full"])
    assert (full.limit, full.seeds, full.per_row_bits, full.bits) == (
        400, [TEST_SEED, TEST_SEED + 1, TEST_SEED + 2], [2], [2, 3, 4])
    default = _settings([])
    assert (default.limit, default.seeds, default.per_row_bits) == (100, [TEST_SEED], [])
    assert _settings(["--seeds", "1,2", "--per-row-bits", "3", "--limit", "7"]).seeds == [1, 2]


def test_test_splits_reach_400_except_sql_which_has_309():
    assert [len(load_split(t, "test", 400, at_most=True)) for t in ("arith", "facts", "sql")] == [400, 400, 309]
    with pytest.raises(ValueError, match="only 309 distinct test instances"):
        load_split("sql", "test", 400)


def test_calibration_seeds_draw_different_samples():
    a, b = (load_split("sql", "calib", 16, seed) for seed in (1, 2))
    assert [e.prompt for e in a] != [e.prompt for e in b]


def test_bad_seeds_are_rejected():
    with pytest.raises(ValueError, match="seeds"):
        GridSettings(["arith"], ["rtn"], [2], ["arith"], seeds=[1, 1])
    with pytest.raises(ValueError, match="speed_rounds must be positive"):
        GridSettings(["arith"], ["rtn"], [2], ["arith"], speed_rounds=0)


def test_decoding_speed_is_the_median_of_its_rounds(monkeypatch):
    calls = []
    monkeypatch.setattr(measure, "greedy_generate", lambda model, tok, prompts, n, stop_at_eos: calls.append(n))
    clock = iter([0.0, 1.0, 5.0, 15.0, 20.0, 22.0])  # rounds of 1 s, 10 s and 2 s
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    speed = measure.decode_tokens_per_second(None, None, ["a", "b"], new_tokens=8, rounds=3)
    assert speed == 16 / 2  # 16 tokens a round: 16, 1.6 and 8 tok/s
    assert calls == [2] + [8] * 6  # the warm-up, then both prompts each round


def test_speed_against_fp32_alternates_rounds_and_takes_the_median_ratio(monkeypatch):
    order = []
    monkeypatch.setattr(measure, "greedy_generate", lambda model, tok, prompts, n, stop_at_eos: order.append(model))
    # start and end of each timed round: quantized 1 s, fp32 2 s | quantized 4 s, fp32 1 s | 1 s, 1.5 s
    clock = iter([0, 1, 1, 3, 3, 7, 7, 8, 8, 9, 9, 10.5])
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    speed, vs_fp32 = measure.decode_speed_against("q", "f", None, ["a"], new_tokens=8, rounds=3)
    assert order == ["q", "f"] + ["q", "f"] * 3  # both warmed up, then rounds in alternation
    assert speed == 8.0  # 8 tokens a round: quantized 8, 2 and 8 tok/s
    assert vs_fp32 == 1.5  # against fp32's 4, 8 and 5.33: ratios 2, 0.25 and 1.5
    row = Row("sql", "tacq", 2, 2.45, 0.7, {"sql": 0.72}, 1.0, speed, speed_vs_fp32=vs_fp32)
    assert format_table([row], ["sql"]).splitlines()[2].split()[-1] == "1.50x"


@pytest.mark.skipif(not (ASSET_DIR / "config.json").is_file(), reason="demo checkpoint not shipped")
def test_rows_summarize_seeds_and_include_the_per_row_regime():
    model, tokenizer = load_demo_model()
    settings = GridSettings(["arith"], ["rtn"], [2], ["facts"], limit=3, calib_size=4, speed_prompts=1,
                            per_row_bits=[2], seeds=[1, 2])
    rows = run_grid(model, tokenizer, settings, progress=False)
    assert [(r.method, r.bits, r.group_size, r.seeds) for r in rows] == [
        ("fp32", 32, 0, 1), ("rtn", 2, 64, 2), ("rtn", 2, -1, 2)]
    assert rows[2].avg_bits < rows[1].avg_bits
    assert rows[1].accuracy_sd == {"facts": 0.0}  # rtn does not depend on the calibration sample
    table = format_table(rows, ["facts"]).splitlines()
    assert "±" in table[3] and table[4].split()[3] == "row"


def test_table_shows_the_spread_over_seeds():
    row = Row("sql", "tacq", 2, 2.45, 0.7, {"sql": 0.72}, 1.0, 10.0, group_size=-1, accuracy_sd={"sql": 0.031},
              seeds=3)
    assert "72.0±3.1" in format_table([row], ["sql"])
