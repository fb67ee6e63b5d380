"""Demo task generators: deterministic, disjoint splits, gold answers right."""

import re

import pytest

from tacq_ext.demo.tasks import TASKS, get_task, load_split, split_of
from tacq_ext.demo.tasks.example import take_split
from tacq_ext.demo.tasks.facts import ATTRIBUTES, LETTERS, knowledge_base, statements


@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_deterministic(name):
    assert load_split(name, "test", 40) == load_split(name, "test", 40)
    assert load_split(name, "test", 40, seed=1) != load_split(name, "test", 40)


@pytest.mark.parametrize("name", list(TASKS))
def test_splits_are_disjoint(name):
    prompts = {split: {ex.prompt for ex in load_split(name, split, 60)} for split in ("calib", "test")}
    train = take_split(lambda: TASKS[name].stream(12345), "train", 600)
    assert {ex.prompt for ex in train}.isdisjoint(prompts["test"] | prompts["calib"])
    assert prompts["calib"].isdisjoint(prompts["test"])
    assert all(split_of(p) == "test" for p in prompts["test"])


def test_arith_worked_steps_are_correct():
    for ex in load_split("arith", "test", 50):
        steps = ex.answer.split("\n")
        value = int(re.search(r"has (\d+)", ex.prompt).group(1))
        for step in steps[:-1]:
            a, op, b, result = re.fullmatch(r"(\d+)([+-])(\d+)=(-?\d+)", step).groups()
            assert int(a) == value and 2 <= int(b) <= 9
            value = int(a) + int(b) if op == "+" else int(a) - int(b)
            assert value == int(result)
        assert 2 <= len(steps) - 1 <= 3 and 0 < value <= 57
        assert steps[-1] == f"#### {value}"
        assert TASKS["arith"].make_scorer()(ex, ex.answer)
        assert not TASKS["arith"].make_scorer()(ex, ex.answer.replace(f"#### {value}", f"#### {value + 1}"))


def test_sql_made_up_slots_only_in_training_and_every_gold_query_runs():
    from tacq_ext.demo.tasks import sql
    from tacq_ext.demo.tasks.sql_database import CITIES, COUNTRIES, build_database

    db = build_database()
    names = r"c\.name = '(\w+)'|country = '(\w+)'"
    real = {c for c, _ in CITIES} | set(COUNTRIES)
    for ex in load_split("sql", "test", 200):
        assert set(v for pair in re.findall(names, ex.answer) for v in pair if v) <= real
        assert sql.execute(db, ex.answer) is not None
    training = take_split(lambda: sql.stream(7, made_up_slots=True), "train", 400)
    made_up = [ex for ex in training if set(v for pair in re.findall(names, ex.answer) for v in pair if v) - real]
    assert 0.15 < len(made_up) / len(training) < 0.6
    assert all(sql.execute(db, ex.answer) is not None for ex in training)


def test_facts_questions_ask_about_learned_facts():
    kb = knowledge_base()
    trained = set(statements())
    for ex in load_split("facts", "test", 50):
        entity = next(e for e, _ in kb if re.search(rf"\b{e}\b", ex.prompt))
        attr = next(a for a in ATTRIBUTES if re.search(rf"\b{a}\b", ex.prompt.split("\n")[0]))
        options = {letter: value for value, letter in re.findall(r"^(\w+) \(([A-D])\)$", ex.prompt, flags=re.M)}
        assert sorted(options) == list(LETTERS) and len(set(options.values())) == 4
        assert options[ex.meta["letter"]] == kb[(entity, attr)]
        assert ex.answer == f"{kb[(entity, attr)]} ({ex.meta['letter']})"
        assert f"The {attr} of {entity} is {kb[(entity, attr)]}." in trained


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="split must be one of"):
        load_split("arith", "validation", 3)
