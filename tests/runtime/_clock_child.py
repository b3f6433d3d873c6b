"""A flow that draws the time, a uuid and a random number through its ctx, for the SIGKILL
test in test_flow_context.py.

Run as ``python -m tests.runtime._clock_child STORE_URL RUN_ID``: the flow draws its values,
prints them (one JSON line) and the process kills itself with SIGKILL before the run ends, as
a worker dies. The test then resumes the run in its own process with the same flow.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from keel import FlowContext, flow

#: Set in the child only: die right after the values are drawn (and journaled).
DIE_AFTER_DRAWING = False


@flow("clock")
async def clock(ctx: FlowContext, input: str) -> dict[str, Any]:
    drawn = {"now": await ctx.now(), "uuid": await ctx.uuid(), "random": await ctx.random()}
    if DIE_AFTER_DRAWING:
        print(json.dumps(drawn), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return {**drawn, "then": await ctx.now()}


if __name__ == "__main__":
    DIE_AFTER_DRAWING = True
    asyncio.run(clock.run("go", store=sys.argv[1], run_id=sys.argv[2]))
