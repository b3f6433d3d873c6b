"""Northwind Outfitters' support desk: keel's flagship application (see README.md).

This package holds the business the desk serves: its policies (``policies``), a seeded
SQLite database (``db``), a help centre of articles (``help_centre``) and the keel tools
over them (``tools``), and the desk itself (``desk.build_desk``). Import the parts you
need; importing this package opens nothing.
Inside the wheel it is ``keel.examples.support_desk``; from a checkout
``examples.support_desk``.
"""

from .db import SCENARIOS, Database, Scenario, create_database
from .desk import Desk, build_desk
from .help_centre import Article, build_corpus, load_articles
from .tools import (
    ALL_SCOPES,
    ALL_TOOLS,
    SPECIALIST_TOOLS,
    approval_policy,
    database_of,
    scopes_for,
)

__all__ = ["ALL_SCOPES", "ALL_TOOLS", "SCENARIOS", "SPECIALIST_TOOLS", "Article", "Database",
           "Desk", "Scenario", "approval_policy", "build_corpus", "build_desk",
           "create_database", "database_of", "load_articles", "scopes_for"]
