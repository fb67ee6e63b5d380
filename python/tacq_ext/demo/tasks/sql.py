"""sql (the Spider analogue): English questions over the fixed schema of
sql_database, answered with SQL and scored by execution accuracy: the result
sets of the gold and predicted queries are compared, as lists when the
question asks for an order and as multisets otherwise."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from typing import Iterator, Optional

from .example import Example
from .sql_database import CITIES, COUNTRIES, SPECIES, build_database

_CITY_NAMES = tuple(c for c, _ in CITIES)
_JOIN_CITY = "FROM person p JOIN city c ON p.city_id = c.id"


# Training-only slot values: made-up names and a wider range of numbers, so
# the model has to copy slots from the question rather than memorize the
# few thousand question instances the real schema values allow.
_SYLLABLES = ("ka", "lo", "mer", "vi", "to", "sa", "bri", "gan", "ru", "del", "fen", "ost", "pa", "quin")


def _made_up_name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _slots(rng: random.Random, made_up: bool):
    """(city, country, species, age, k, low, high): the database's values, or
    with `made_up` half the time other names and numbers."""
    if made_up and rng.random() < 0.5:
        city, country = _made_up_name(rng), _made_up_name(rng) + "ia"
        species = rng.choice(SPECIES + ("horse", "goat", "frog", "duck", "mouse"))
        return (city, country, species, rng.randint(10, 99), rng.randint(2, 9),
                *sorted(rng.sample(range(10, 100), 2)))
    low, high = sorted(rng.sample(range(18, 71), 2))
    return (rng.choice(_CITY_NAMES), rng.choice(COUNTRIES), rng.choice(SPECIES), rng.randint(18, 70),
            rng.randint(2, 5), low, high)


def _templates(rng: random.Random, made_up: bool = False):
    city, country, species, age, k, low, high = _slots(rng, made_up)
    return [
        (f"names of people older than {age}", f"SELECT name FROM person WHERE age > {age}"),
        (f"names of people younger than {age}", f"SELECT name FROM person WHERE age < {age}"),
        (f"names of people aged between {low} and {high}",
         f"SELECT name FROM person WHERE age BETWEEN {low} AND {high}"),
        (f"names of {species} owners older than {age}",
         f"SELECT DISTINCT p.name FROM person p JOIN pet t ON t.owner_id = p.id "
         f"WHERE t.species = '{species}' AND p.age > {age}"),
        (f"names of people in {city} ordered by age", f"SELECT p.name {_JOIN_CITY} WHERE c.name = '{city}' ORDER BY p.age"),
        (f"how many people live in {city}", f"SELECT COUNT(*) {_JOIN_CITY} WHERE c.name = '{city}'"),
        (f"average age of people in {city}", f"SELECT AVG(p.age) {_JOIN_CITY} WHERE c.name = '{city}'"),
        (f"names of people in {city} older than {age}",
         f"SELECT p.name {_JOIN_CITY} WHERE c.name = '{city}' AND p.age > {age}"),
        (f"names of people in {city} younger than {age}",
         f"SELECT p.name {_JOIN_CITY} WHERE c.name = '{city}' AND p.age < {age}"),
        (f"names of people in {country}", f"SELECT p.name {_JOIN_CITY} WHERE c.country = '{country}'"),
        (f"how many people in {country} are older than {age}",
         f"SELECT COUNT(*) {_JOIN_CITY} WHERE c.country = '{country}' AND p.age > {age}"),
        (f"how many people are older than {age}", f"SELECT COUNT(*) FROM person WHERE age > {age}"),
        (f"how many {species} pets do people in {city} own",
         f"SELECT COUNT(*) FROM pet t JOIN person p ON t.owner_id = p.id JOIN city c ON p.city_id = c.id "
         f"WHERE c.name = '{city}' AND t.species = '{species}'"),
        (f"cities in {country} ordered by population",
         f"SELECT name FROM city WHERE country = '{country}' ORDER BY population"),
        (f"the {k} oldest people", f"SELECT name FROM person ORDER BY age DESC LIMIT {k}"),
        (f"population of {city}", f"SELECT population FROM city WHERE name = '{city}'"),
        (f"owners of a {species}",
         f"SELECT DISTINCT p.name FROM person p JOIN pet t ON t.owner_id = p.id WHERE t.species = '{species}'"),
        (f"how many {species} pets are older than {k}",
         f"SELECT COUNT(*) FROM pet WHERE species = '{species}' AND age > {k}"),
    ]


def stream(seed: int, made_up_slots: bool = False) -> Iterator[Example]:
    """Questions about the database; with made_up_slots (training only),
    half of them name made-up cities, countries and species instead."""
    rng = random.Random(seed)
    while True:
        question, gold = rng.choice(_templates(rng, made_up_slots))
        yield Example(f"Q: {question}?\nSQL: ", gold, {"sql": gold, "ordered": "ORDER BY" in gold})


def _normalize(rows):
    return [tuple(round(v, 4) if isinstance(v, float) else v for v in row) for row in rows]


def execute(db: sqlite3.Connection, query: str) -> Optional[list]:
    """Rows of `query`, or None if it does not run (or tries to write)."""
    if not query.lstrip().upper().startswith("SELECT"):
        return None
    try:
        return _normalize(db.execute(query).fetchall())
    except sqlite3.Error:
        return None


def same_result(db: sqlite3.Connection, gold: str, predicted: str, ordered: bool) -> bool:
    expected, got = execute(db, gold), execute(db, predicted)
    if expected is None:
        raise ValueError(f"gold SQL does not run: {gold}")
    if got is None:
        return False
    return got == expected if ordered else Counter(got) == Counter(expected)


class SqlScorer:
    """Execution accuracy against the deterministic database (built once)."""

    def __init__(self):
        self.db = build_database()

    def __call__(self, example: Example, completion: str) -> bool:
        return same_result(self.db, example.meta["sql"], completion.strip().split("\n")[0],
                           example.meta["ordered"])
