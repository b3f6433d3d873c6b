"""`keel demo`: the support desk served on 127.0.0.1 and a scripted day played through its
HTTP API, offline, leaving nothing behind; its options and their bad values."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the demo's temporary folder goes, so the test can see it was removed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_keel_demo_serves_the_desk_plays_the_day_and_leaves_nothing(
        keel: Keel, tmp_path: Path, private_tmp: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")  # no key: it must not be used
    r = keel("demo")
    assert r.exit_code == 0, r
    out = r.stdout
    assert "the support desk" in out and "no LLM or network is used" in out
    url = re.search(r"console  (http://127\.0\.0\.1:\d+)/console", out)
    assert url is not None, out
    assert f"chat     {url.group(1)}/chat" in out
    assert re.search(r"operator key  keel_\S+", out)
    assert "A 2,490.00 refund: two different reviewers" in out  # the live board
    assert "12 (13 turns)" in out
    assert re.search(r"resolved without a person\s*│\s*10", out)
    assert re.search(r"escalated to a person\s*│\s*2", out)
    assert "2 requests, 3 reviews accepted, 1 refused" in out
    assert "NW-100007 EUR 59.90, NW-100008 EUR 399.00, NW-100009 EUR 2,490.00" in out
    assert re.search(r"latency per turn\s*│\s*p50 \d+ ms, p95 \d+ ms", out)
    assert f"{url.group(1)}/console/approvals" in out
    assert r.stderr == ""
    # Nothing left behind: not in the cwd, not in the temporary folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert list(private_tmp.iterdir()) == []


def test_the_examples_stay_reachable(keel: Keel) -> None:
    r = keel("demo", "--examples")
    assert r.exit_code == 0, r
    assert "The model is scripted" in r.stdout and "examples/tool_use.py" in r.stdout
    assert "the support desk" not in r.stdout


def test_bad_options_are_refused_before_anything_is_served(keel: Keel, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep me")
    r = keel("demo", "--dir", str(used))
    assert r.exit_code == 2, r
    assert "is not an empty folder" in r.stderr and "--dir" in r.stderr
    assert sorted(p.name for p in used.iterdir()) == ["mine.txt"]  # untouched
    a_file = tmp_path / "file.db"
    a_file.write_text("x")
    r = keel("demo", "--dir", str(a_file))
    assert r.exit_code == 2 and "is not an empty folder" in r.stderr, r
    r = keel("demo", "--dir", str(tmp_path / ("x" * 5000)))  # too long for the filesystem
    assert r.exit_code == 2 and "cannot use" in r.stderr and "--dir" in r.stderr, r
    assert "Traceback" not in r.output
    r = keel("demo", "--examples", "--keep")
    assert r.exit_code == 2 and "--examples runs the small examples" in r.stderr, r
    r = keel("demo", "--dir", "\x1b[31mred\x1b[0m", "--examples")
    assert r.exit_code == 2 and "\x1b" not in r.output, r
