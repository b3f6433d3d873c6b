"""A seeded support-desk database, made once per session and copied for each test that
writes to it (a copy is a few milliseconds; generating one is about a second)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from examples.support_desk.db import Database, create_database


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_database(tmp_path_factory.mktemp("desk") / "seed7.db")


@pytest.fixture
def db(seeded: Path, tmp_path: Path) -> Database:
    """A fresh copy of the seeded database, for one test."""
    return Database(shutil.copyfile(seeded, tmp_path / "desk.db"))


@pytest.fixture(scope="session")
def help_centre() -> object:
    """The help centre's search index, built once (2-3 s) and shared by the desk tests."""
    from examples.support_desk.processes import HelpCentre

    built = HelpCentre()
    built.corpus  # noqa: B018 - build it now, not inside the first test's timing
    return built
