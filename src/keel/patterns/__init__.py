"""L4: orchestration patterns built on flows (:class:`keel.Flow`): planning, reflection,
workflows, routing, supervisor and hierarchical teams, handoffs, group chat and marketplace.

Every pattern is a flow, so it resumes, replays and traces like a single agent, and its
sub-agents run with a share of its budget."""

__all__: list[str] = []
