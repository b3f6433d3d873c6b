"""``StoreConformance``: the whole run-store conformance suite in one class."""

from __future__ import annotations

from keel.testing._store_conformance import RunConformance
from keel.testing._store_conformance_conversations import ConversationConformance
from keel.testing._store_conformance_fleet import FleetConformance
from keel.testing._store_conformance_isolation import IsolationConformance
from keel.testing._store_conformance_records import RecordsConformance
from keel.testing._store_conformance_stats import StatsConformance
from keel.testing._store_conformance_tenants import TenantConformance

__all__ = ["StoreConformance"]


class StoreConformance(RunConformance, FleetConformance, TenantConformance,
                       IsolationConformance, StatsConformance, ConversationConformance,
                       RecordsConformance):
    """The tests every RunStore must pass: runs and journals, then leases, claiming,
    cancellation, pruning and human tasks, and tenants (stored with each run, fixed, and
    filtered on by ``list_runs``), and isolation (calls scoped to a tenant see and act on
    its runs and tasks only), and run analytics (``stats`` agrees with a brute-force
    count), and conversations (the filter, several journals at once, deletion of one
    tenant's conversation). Subclass it and provide a ``store`` fixture that
    yields a fresh, open, empty store for each test."""
