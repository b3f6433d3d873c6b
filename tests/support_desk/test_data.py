"""The support desk's data: a deterministic, consistent database and a help centre that
agrees with the shop's policies."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from examples.support_desk import gen_articles
from examples.support_desk import policies as P
from examples.support_desk.catalog import BY_SKU, PRODUCTS
from examples.support_desk.db import (
    SCENARIOS,
    TABLES,
    Database,
    create_database,
    main,
    table_counts,
)
from examples.support_desk.help_centre import (
    FOLDER,
    SECTIONS,
    build_corpus,
    load_articles,
    parse_article,
)

from keel import ConfigError, UserError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


# ---------------------------------------------------------------------------- determinism


def test_one_seed_gives_byte_identical_databases_and_another_seed_another(
        seeded: Path, tmp_path: Path) -> None:
    again = create_database(tmp_path / "again.db", seed=7)
    other = create_database(tmp_path / "other.db", seed=8)
    assert digest(again) == digest(seeded)
    assert digest(other) != digest(seeded)
    # the scenario customers are planted at the same ids with the same facts for any seed
    for path in (seeded, other):
        assert rows(path, "SELECT id, status, total_cents FROM orders WHERE id <= 'NW-100011' "
                    "ORDER BY id") == rows(seeded, "SELECT id, status, total_cents FROM orders "
                                           "WHERE id <= 'NW-100011' ORDER BY id")


def test_the_shop_is_as_big_as_promised(seeded: Path) -> None:
    counts = table_counts(seeded)
    assert counts["customers"] >= 500
    assert counts["orders"] >= 2000
    assert counts["order_items"] >= counts["orders"]
    assert counts["payments"] == counts["orders"]
    assert counts["shipments"] >= 1500 and counts["carrier_events"] >= 4 * counts["shipments"]
    assert counts["tickets"] >= 300 and counts["ticket_messages"] > counts["tickets"]
    assert min(counts[t] for t in ("returns", "invoices", "subscriptions", "refunds")) > 20
    assert counts["effects"] == 0  # the audit trail of the tools starts empty
    statuses = dict(rows(seeded, "SELECT status, count(*) FROM shipments GROUP BY status"))
    assert set(statuses) == {"in_transit", "delayed", "delivered", "lost",
                             "returned_to_sender"}
    # fictional people only: addresses on reserved domains
    emails = [e for (e,) in rows(seeded, "SELECT email FROM customers")]
    pattern = re.compile(r"[a-z.]+\.\d+@(example\.(com|net|org)|[a-z]+\.test)")
    assert [e for e in emails if not pattern.fullmatch(e)] == []
    assert len(set(emails)) == len(emails)


# ------------------------------------------------------------------------------ integrity


def test_foreign_keys_hold_and_every_total_is_its_items(seeded: Path) -> None:
    assert rows(seeded, "PRAGMA foreign_key_check") == []
    bad_totals = rows(seeded, """
        SELECT o.id FROM orders o JOIN (SELECT order_id, sum(line_total_cents) AS s
                                        FROM order_items GROUP BY order_id) i
          ON i.order_id = o.id
        WHERE o.subtotal_cents != i.s OR o.total_cents != o.subtotal_cents + o.shipping_cents""")
    assert bad_totals == []
    assert rows(seeded, "SELECT count(*) FROM orders WHERE id NOT IN (SELECT order_id FROM "
                "order_items)") == [(0,)]
    assert rows(seeded, "SELECT count(*) FROM order_items WHERE line_total_cents != "
                "unit_price_cents * quantity") == [(0,)]
    assert rows(seeded, "SELECT count(*) FROM payments p JOIN orders o ON o.id = p.order_id "
                "WHERE p.amount_cents != o.total_cents OR p.currency != o.currency") == [(0,)]


def test_payments_refunds_shipments_and_invoices_agree(seeded: Path) -> None:
    assert rows(seeded, """
        SELECT p.id FROM payments p LEFT JOIN (SELECT payment_id, sum(amount_cents) AS s
                                               FROM refunds WHERE status = 'issued'
                                               GROUP BY payment_id) r ON r.payment_id = p.id
        WHERE p.refunded_cents != coalesce(r.s, 0) OR p.refunded_cents > p.amount_cents
           OR (p.refunded_cents = 0) != (p.status = 'captured')""") == []
    # dispatched orders have a parcel on its way, lost or back; delivered ones were delivered
    assert rows(seeded, """
        SELECT o.id FROM orders o LEFT JOIN shipments s ON s.order_id = o.id
        WHERE (o.status = 'dispatched' AND s.status NOT IN ('in_transit', 'delayed', 'lost'))
           OR (o.status = 'delivered' AND (s.status != 'delivered' OR s.delivered_at IS NULL))
           OR (o.status IN ('placed', 'processing', 'cancelled') AND s.id IS NOT NULL)""") == []
    # carrier scans never lie in the future of the data's "today"
    assert rows(seeded, "SELECT max(at) FROM carrier_events")[0][0] <= "2026-11-30T12:00:00Z"
    assert rows(seeded, "SELECT count(*) FROM invoices i JOIN orders o ON o.id = i.order_id "
                "WHERE i.amount_cents != o.total_cents") == [(0,)]
    assert rows(seeded, "SELECT count(*) FROM products") == [(len(PRODUCTS),)]


@pytest.mark.parametrize(("name", "status", "shipment"), [
    ("in_transit", "dispatched", "in_transit"), ("lost_parcel", "dispatched", "lost"),
    ("return_eligible", "delivered", "delivered"), ("just_placed", "placed", None),
    ("refund_two_approvals", "delivered", "delivered"), ("cancellable", "processing", None),
])
def test_scenario_orders_are_what_their_names_say(seeded: Path, name: str, status: str,
                                                  shipment: str | None) -> None:
    s = SCENARIOS[name]
    found = rows(seeded, "SELECT o.customer_id, o.status, s.status FROM orders o LEFT JOIN "
                 "shipments s ON s.order_id = o.id WHERE o.id = ?", s.order_id)
    assert found == [(s.customer_id, status, shipment)]


def test_scenario_amounts_tickets_invoices_and_subscriptions(seeded: Path) -> None:
    for name in ("refund_small", "refund_one_approval", "refund_two_approvals"):
        s = SCENARIOS[name]
        assert s.amount is not None
        (item,) = rows(seeded, "SELECT unit_price_cents FROM order_items WHERE order_id = ?",
                       s.order_id)
        assert item[0] == round(s.amount * 100)
        assert rows(seeded, "SELECT customer_id, status FROM tickets WHERE id = ?",
                    s.ticket_id) == [(s.customer_id, "open")]
    assert [P.reviewers_for_refund(SCENARIOS[n].amount or 0) for n in (
        "refund_small", "refund_one_approval", "refund_two_approvals")] == [0, 1, 2]
    cancellable = SCENARIOS["cancellable"]
    assert rows(seeded, "SELECT total_cents FROM orders WHERE id = ?",
                cancellable.order_id) == [(round((cancellable.amount or 0) * 100),)]
    unpaid = SCENARIOS["unpaid_invoice"]
    assert rows(seeded, "SELECT customer_id, status FROM invoices WHERE id = ?",
                unpaid.invoice_id) == [(unpaid.customer_id, "unpaid")]
    member = SCENARIOS["subscription"]
    assert rows(seeded, "SELECT customer_id, plan, status FROM subscriptions WHERE id = ?",
                member.subscription_id) == [(member.customer_id, "summit", "active")]


# ----------------------------------------------------------------------------- bad input


def test_bad_paths_and_seeds_are_refused_with_the_fix(tmp_path: Path, seeded: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        create_database(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        create_database(tmp_path / "nowhere" / "desk.db")
    for seed in (-1, 1.5, "7", True, 2**64):
        with pytest.raises(ConfigError, match="seed"):
            create_database(tmp_path / "x.db", seed=seed)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="already exists"):
        create_database(seeded)
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(ConfigError, match="no desk database"):
        Database(tmp_path / "missing.db")


def test_the_command_line_creates_a_database_and_reports_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli.db"
    assert main([str(target), "--seed", "3"]) == 0
    assert "created" in capsys.readouterr().out
    assert table_counts(target)["orders"] >= 2000
    assert main([str(target)]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([str(target), "--overwrite", "--seed", "3"]) == 0
    assert set(table_counts(target)) == set(TABLES)


# ------------------------------------------------------------------------------- articles


def test_the_help_centre_has_enough_articles_in_every_section() -> None:
    articles = load_articles()
    assert len(articles) >= 200
    per = {s: sum(a.section == s for a in articles) for s in SECTIONS}
    assert min(per.values()) >= 15, per
    assert len({a.id for a in articles}) == len(articles)
    assert all(a.tags and a.title and len(a.body) > 80 for a in articles)
    assert [a.section for a in load_articles(sections=["returns"])] == ["returns"] * per[
        "returns"]


def test_the_committed_articles_are_what_the_generator_writes(tmp_path: Path) -> None:
    """So every number in them comes from policies.py: change a policy, regenerate."""
    assert gen_articles.write(tmp_path) >= 200
    made = {f.name: f.read_text(encoding="utf-8") for f in tmp_path.glob("*.md")}
    shipped = {f.name: f.read_text(encoding="utf-8") for f in FOLDER.glob("*.md")}
    assert made == shipped, "run `python -m examples.support_desk.gen_articles` and commit"


def test_policy_numbers_in_the_articles_match_policies_py() -> None:
    by_id = {a.id: a for a in load_articles()}
    assert f"{P.RETURN_WINDOW_DAYS} days" in by_id["policies-returns"].body
    assert f"{P.ELECTRONICS_RETURN_WINDOW_DAYS} days" in by_id["policies-returns"].body
    refunds = by_id["policies-refunds"].body
    assert f"up to {P.REFUND_APPROVAL_LIMIT:.0f}" in refunds
    assert f"above {P.REFUND_TWO_REVIEWER_LIMIT:,.0f} two different reviewers" in refunds
    for p in PRODUCTS:
        days = P.CATEGORIES[BY_SKU[p.sku].category].return_days
        assert f"within {days} days" in by_id[f"returns-{p.sku.lower()}"].body
    for c in P.CARRIERS.values():
        body = by_id[f"shipping-tracking-{c.code}"].body
        assert f"`{c.tracking_prefix}`" in body and f"{c.lost_after_days} days" in body
    ebike = by_id["returns-bk-5001"].body
    assert "two different reviewers" in ebike and "€2,490.00" in ebike
    assert "€4.95" in by_id["shipping-dhl-nl"].body  # DHL Standard's list price


@pytest.mark.parametrize(("text", "error"), [
    ("no front matter\n", "front matter block"),
    ("---\nid: a\ntitle: T\nsection: returns\n---\nbody\n", "lacks tags"),
    ("---\nid: a\ntitle: T\nsection: gossip\ntags: x\n---\nbody\n", "not one of"),
    ("---\nid: Bad Id\ntitle: T\nsection: returns\ntags: x\n---\nbody\n", "lowercase"),
    ("---\nid: a\ntitle: T\nsection: returns\ntags: x\n---\n\n  \n", "no body"),
    ("---\nid: a\njust words\n---\nbody\n", "not 'key: value'"),
])
def test_malformed_articles_are_refused_naming_the_file(text: str, error: str) -> None:
    with pytest.raises(UserError, match=error) as info:
        parse_article(text, "help_centre/a.md")
    assert "help_centre/a.md" in str(info.value)


def test_bad_article_files_and_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("---\nid: a\ntitle: T\nsection: returns\ntags: x\n---\nB\n")
    with pytest.raises(UserError, match="must match the file name"):
        load_articles(tmp_path)
    (tmp_path / "b.md").write_bytes(b"---\nid: b\n\xff\xfe\n---\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_articles(tmp_path)
    (tmp_path / "b.md").write_text("---\nid: b\ntitle: T\nsection: returns\ntags: x\n---\n"
                                   + "x" * 70_000)
    with pytest.raises(UserError, match="split it"):
        load_articles(tmp_path)
    with pytest.raises(UserError, match="no help-centre folder"):
        load_articles(tmp_path / "missing")
    with pytest.raises(UserError, match="unknown help-centre section"):
        load_articles(sections=["gossip"])


def test_the_corpus_finds_the_article_that_answers(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    pytest.importorskip("wordllama")
    with build_corpus(tmp_path / "help.db", sections=["returns", "policies"]) as corpus:
        assert len(corpus.documents()) == len(load_articles(sections=["returns", "policies"]))
        hits = corpus.search("return window for electronics", k=5, mode="bm25")
        assert "returns-electronics-window" in [h.chunk.doc_id for h in hits]
        assert {h.chunk.metadata["help_section"] for h in hits} <= {"returns", "policies"}


def test_the_package_works_where_the_wheel_puts_it(tmp_path: Path) -> None:
    """In a wheel the package is keel/examples/support_desk: only relative imports, and its
    data files beside it."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "support_desk").symlink_to(repo / "examples" / "support_desk")
    code = ("import sys, keel; keel.__path__.append(sys.argv[1])\n"
            "from keel.examples.support_desk import ALL_TOOLS, create_database, load_articles\n"
            "create_database(sys.argv[1] + '/d.db')\n"
            "print(len(ALL_TOOLS), len(load_articles()), 'examples' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["16", str(len(load_articles())), "False"]
