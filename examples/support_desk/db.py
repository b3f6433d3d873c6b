"""The support desk's SQLite database: schema, deterministic seeding, and connections.

``create_database(path, seed=7)`` writes a fresh database of Northwind Outfitters (520
customers, about 2,400 orders with items, payments, shipments and carrier events, returns,
refunds, invoices, subscriptions and 320 past tickets) in well under two seconds. The same
seed gives byte-identical files. ``Database(path)`` is what the desk's tools are handed
(``deps=``) to reach it::

    python -m examples.support_desk.db desk.db        # or: keel/examples/... in a wheel
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Final

from keel import ConfigError, UserError

from . import policies as P
from .catalog import PRODUCTS
from .generate import Generator, cents
from .scenarios import SCENARIOS, Scenario, plant

__all__ = ["CUSTOMERS", "ORDERS", "SCENARIOS", "TICKETS", "Database", "Scenario",
           "create_database", "table_counts"]

SCHEMA_FILE: Final = Path(__file__).with_name("schema.sql")
TABLES: Final = ("customers", "addresses", "products", "orders", "order_items", "payments",
                 "shipments", "carrier_events", "returns", "subscriptions", "invoices",
                 "tickets", "ticket_messages", "refunds", "effects")
#: How much the generator makes (the scenario customers are among the customers).
CUSTOMERS: Final = 520
ORDERS: Final = 2400
TICKETS: Final = 320
#: The share of customers with a Northwind Club membership (current or past).
SUBSCRIPTION_SHARE: Final = 0.12
MAX_SEED: Final = 2**63 - 1


def _check(path: str | os.PathLike[str], seed: object) -> Path:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", f"must be a whole number from 0 to 2**63-1, not {seed!r}")
    if not isinstance(path, str | os.PathLike) or not str(path).strip():
        raise ConfigError("path", f"must be a file path, not {path!r}")
    target = Path(path)
    if target.is_dir():
        raise ConfigError("path", f"{target} is a folder; name the database file, e.g. "
                          f"{target / 'desk.db'}")
    if not target.parent.is_dir():
        raise ConfigError("path", f"the folder {target.parent} does not exist; create it first")
    return target


def create_database(path: str | os.PathLike[str], *, seed: int = 7,
                    overwrite: bool = False) -> Path:
    """Create and seed the desk's database at ``path`` and return its path.

    Deterministic: the same ``seed`` writes the same rows in the same order (no clock, no
    global random), so two files made with one seed are byte-identical. An existing file is
    refused unless ``overwrite=True`` (then it is replaced). Bad input (a folder, a missing
    parent folder, a seed that is not a non-negative integer) is a ``keel.ConfigError``.
    """
    target = _check(path, seed)
    if target.exists():
        if not overwrite:
            raise UserError(f"{target} already exists; pass overwrite=True (--overwrite) to "
                            "replace it, or choose another path.")
        target.unlink()
    gen = Generator(seed)
    plant(gen)
    _random_shop(gen)
    tmp = target.with_name(target.name + ".partial")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        schema = SCHEMA_FILE.read_text(encoding="utf-8")
        tables, _, indexes = schema.partition("CREATE INDEX")
        db.executescript(tables)
        db.executemany("INSERT INTO products VALUES (?, ?, ?, ?)",
                       [(p.sku, p.name, p.category, cents(p.price_eur)) for p in PRODUCTS])
        for table in TABLES:
            rows = gen.rows.tables.get(table)
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        db.executescript("CREATE INDEX" + indexes)  # after the rows: cheaper
        db.commit()
    finally:
        db.close()
    tmp.replace(target)
    return target


def _random_shop(gen: Generator) -> None:
    rng = gen.rng
    planted = len(gen.customer_orders)
    customers = [gen.customer(n) for n in range(planted + 1, CUSTOMERS + 1)]
    weights = itertools.accumulate(rng.paretovariate(2.0) for _ in customers)
    cumulative = list(weights)  # a few customers order a lot
    while len(gen.orders) < ORDERS:
        cid = rng.choices(customers, cum_weights=cumulative)[0]
        plan = gen.random_plan(cid)
        order = gen.write_order(plan)
        gen.maybe_return(plan, order)
    gen.settle_payments()
    for cid in customers:
        if rng.random() < SUBSCRIPTION_SHARE:
            status = rng.choices(("active", "past_due", "cancelled"), (75, 10, 15))[0]
            gen.subscription(cid, rng.choice(tuple(P.PLANS)), status,
                             months=rng.randint(1, 6))
    planted_tickets = gen.rows.count("tickets")
    gen.random_tickets(TICKETS - planted_tickets, customers)


def table_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """Rows per table of a desk database (for the README and the tests)."""
    with sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True) as db:
        return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}


class Database:
    """A handle on a desk database, handed to the tools as the run's ``deps`` (or as the
    ``database`` attribute of the desk's own deps object).

    ``today`` is the shop's "now" for business rules (return windows, due dates); it defaults
    to the seeded data's reference time so that the scripted scenarios keep their meaning
    whatever the calendar says. Each call opens its own connection (tools run in worker
    threads); writes take the database's write lock up front (``BEGIN IMMEDIATE``).
    """

    def __init__(self, path: str | os.PathLike[str], *, today: datetime | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError("path", f"no desk database at {self.path}; create one with "
                              "create_database(path) or `python -m examples.support_desk.db "
                              "PATH`")
        if today is not None and today.tzinfo is None:
            raise ConfigError("today", "must be a timezone-aware datetime")
        self.today = today or P.REFERENCE_TIME
        with self.connect() as db:
            db.execute("PRAGMA journal_mode = WAL")

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        db = self.connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m examples.support_desk.db PATH [--seed N] [--overwrite]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m examples.support_desk.db",
                                     description="Create Northwind Outfitters' seeded "
                                     "support-desk database.")
    parser.add_argument("path", help="the SQLite file to create")
    parser.add_argument("--seed", type=int, default=7, help="the generator's seed (7)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        made = create_database(args.path, seed=args.seed, overwrite=args.overwrite)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = table_counts(made)
    print(f"created {made}: " + ", ".join(f"{n} {t}" for t, n in counts.items() if n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
