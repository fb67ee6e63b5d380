"""The sql task's execution-accuracy scorer against the deterministic database."""

import pytest

from tacq_ext.demo.tasks import Example, load_split
from tacq_ext.demo.tasks.sql import SqlScorer, execute, same_result
from tacq_ext.demo.tasks.sql_database import build_database


@pytest.fixture(scope="module")
def scorer():
    return SqlScorer()


def _example(sql):
    return Example("Q: ?\nSQL: ", sql, {"sql": sql, "ordered": "ORDER BY" in sql})


def test_database_is_deterministic():
    a, b = build_database(), build_database()
    for table in ("city", "person", "pet"):
        rows = a.execute(f"SELECT * FROM {table}").fetchall()
        assert rows and rows == b.execute(f"SELECT * FROM {table}").fetchall()


def test_gold_answers_run_and_match_themselves(scorer):
    for ex in load_split("sql", "test", 80):
        assert execute(scorer.db, ex.answer) is not None
        assert scorer(ex, ex.answer)


@pytest.mark.parametrize("gold, equivalent", [
    ("SELECT p.name FROM person p JOIN city c ON p.city_id = c.id WHERE c.name = 'Oslo' AND p.age > 30",
     "SELECT person.name AS who FROM city JOIN person ON city.id = person.city_id "
     "WHERE person.age > 30 AND city.name = 'Oslo'"),
    ("SELECT name FROM person WHERE age > 40", "SELECT name FROM person WHERE 40 < age ORDER BY name DESC"),
    ("SELECT COUNT(*) FROM pet WHERE species = 'cat' AND age > 3",
     "SELECT COUNT(id) FROM pet WHERE age > 3 AND species = 'cat'"),
    ("SELECT name FROM person ORDER BY age DESC LIMIT 3",
     "SELECT p.name FROM person AS p ORDER BY p.age DESC LIMIT 3"),
])
def test_equivalent_sql_is_accepted(scorer, gold, equivalent):
    assert scorer(_example(gold), equivalent)


@pytest.mark.parametrize("gold, wrong", [
    ("SELECT name FROM person WHERE age > 40", "SELECT name FROM person WHERE age >= 40"),
    ("SELECT name FROM person WHERE age > 40", "SELECT name FROM person WHERE age > 40 LIMIT 1"),
    ("SELECT name FROM person WHERE age > 40", "SELECT name, age FROM person WHERE age > 40"),
    ("SELECT name FROM person WHERE age > 40", "SELEC name FROM person"),
    ("SELECT name FROM person WHERE age > 40", "DROP TABLE person"),
    ("SELECT name FROM city WHERE country = 'France' ORDER BY population",
     "SELECT name FROM city WHERE country = 'France' ORDER BY population DESC"),
])
def test_wrong_sql_is_rejected(scorer, gold, wrong):
    assert not scorer(_example(gold), wrong)


def test_ordered_comparison_is_a_list_and_unordered_a_multiset():
    db = build_database()
    names = "SELECT name FROM city WHERE country = 'France'"
    assert same_result(db, names + " ORDER BY population", names + " ORDER BY population DESC", ordered=False)
    assert not same_result(db, names + " ORDER BY population", names + " ORDER BY population DESC", ordered=True)
    assert not same_result(db, "SELECT name FROM person", "SELECT DISTINCT 1 FROM person", ordered=False)
    with pytest.raises(ValueError, match="gold SQL does not run"):
        same_result(db, "SELECT nothing FROM nowhere", names, ordered=False)
