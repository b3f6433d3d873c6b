"""``count_feedback``: one increment of ``keel_feedback_total{agent,thumbs}`` per record, with
``none`` for feedback without thumbs, and a bounded agent label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from keel.observe import count_feedback
from keel.observe._metrics import FEEDBACK_AGENTS
from keel.store import Feedback


def _value(reg: CollectorRegistry, agent: str, thumbs: str) -> float:
    found = reg.get_sample_value("keel_feedback_total", {"agent": agent, "thumbs": thumbs})
    return 0.0 if found is None else found


def test_each_record_is_counted_by_agent_and_thumbs() -> None:
    reg = CollectorRegistry()
    for thumbs in ("up", "down", "down", None):
        count_feedback(Feedback(feedback_id=f"f{thumbs}", run_id="r1", created_at=1.0,
                                thumbs=thumbs, score=None if thumbs else 0.3),
                       agent="desk", registry=reg)
    assert (_value(reg, "desk", "up"), _value(reg, "desk", "down"),
            _value(reg, "desk", "none")) == (1.0, 2.0, 1.0)


def test_the_agent_label_is_bounded() -> None:
    reg = CollectorRegistry()
    fb = Feedback(feedback_id="f", run_id="r", created_at=1.0, thumbs="up")
    for n in range(FEEDBACK_AGENTS + 5):
        count_feedback(fb, agent=f"a{n}", registry=reg)
    assert _value(reg, "other", "up") == 5.0
    assert _value(reg, f"a{FEEDBACK_AGENTS - 1}", "up") == 1.0
