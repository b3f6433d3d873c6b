"""L4: versioned agents, feature flags and percentage rollouts with automatic rollback."""

from keel.rollout._errors import RolloutError

RolloutError.__module__ = __name__

__all__ = ["RolloutError"]
