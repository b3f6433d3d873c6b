"""L4: versioned agents, feature flags and percentage rollouts with automatic rollback.

See docs/rollout.md. ``Versions`` names versions of one agent; ``Flags`` keeps feature
flags in the run store; ``Rollout`` sends a sticky, growing share of traffic to a candidate
version and rolls it back when its ``Gates`` break.
"""

from keel.rollout._errors import RolloutError
from keel.rollout._flags import Flag, Flags
from keel.rollout._gates import ArmStats, Breach, Gates, OnlineEval
from keel.rollout._hashing import BUCKETS, bucket, in_share
from keel.rollout._rollout import ROLLOUT_KEY, Rollout, Tick
from keel.rollout._state import (
    STATUSES,
    RolloutState,
    change_rollout,
    read_rollout,
    rollout_history,
)
from keel.rollout._versions import VersionInfo, Versions

RolloutError.__module__ = __name__

__all__ = [
    "BUCKETS",
    "ROLLOUT_KEY",
    "STATUSES",
    "ArmStats",
    "Breach",
    "Flag",
    "Flags",
    "Gates",
    "OnlineEval",
    "Rollout",
    "RolloutError",
    "RolloutState",
    "Tick",
    "VersionInfo",
    "Versions",
    "bucket",
    "change_rollout",
    "in_share",
    "read_rollout",
    "rollout_history",
]
