"""The fixed schema of the sql task and its deterministically built sqlite
database (in memory)."""

from __future__ import annotations

import random
import sqlite3

SCHEMA = """
CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT, country TEXT, population INTEGER);
CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, city_id INTEGER);
CREATE TABLE pet (id INTEGER PRIMARY KEY, owner_id INTEGER, species TEXT, age INTEGER);
"""
CITIES = (("Oslo", "Norway"), ("Bergen", "Norway"), ("Lyon", "France"), ("Nice", "France"),
          ("Paris", "France"), ("Rome", "Italy"), ("Milan", "Italy"), ("Porto", "Portugal"))
COUNTRIES = ("Norway", "France", "Italy", "Portugal")
PEOPLE = ("Alma", "Boris", "Clara", "Dario", "Edith", "Felix", "Greta", "Hugo", "Irene", "Jonas",
          "Karla", "Lukas", "Mira", "Nils", "Olga", "Pavel", "Rosa", "Sven", "Tina", "Ugo",
          "Vera", "Wim", "Xena", "Yann")
SPECIES = ("cat", "dog", "fish", "bird")
_DB_SEED = 1234


def build_database() -> sqlite3.Connection:
    """The same rows every time (seeded), so gold and predicted SQL are
    executed against identical data."""
    rng = random.Random(_DB_SEED)
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    for i, (name, country) in enumerate(CITIES, 1):
        db.execute("INSERT INTO city VALUES (?, ?, ?, ?)", (i, name, country, rng.randint(50, 2000) * 1000))
    for i, name in enumerate(PEOPLE, 1):
        db.execute("INSERT INTO person VALUES (?, ?, ?, ?)", (i, name, rng.randint(18, 70), rng.randint(1, len(CITIES))))
    for i in range(1, 41):
        db.execute("INSERT INTO pet VALUES (?, ?, ?, ?)",
                   (i, rng.randint(1, len(PEOPLE)), rng.choice(SPECIES), rng.randint(1, 15)))
    db.commit()
    return db
