"""A fork server for the crash tests: one long-lived interpreter that has imported keel and
the child scripts, and forks a fresh process for every run, resume or decision.

Every child is a real, separate process (its own pid, its own worker id, its own store
connections) that is SIGKILLed for real; forking from a pre-imported interpreter only saves
the half second of imports a fresh ``python crash_agent.py`` pays, which is what lets the
matrix run on both stores in every durability mode. The server itself never opens a store,
starts an event loop or a thread, so each fork starts from the same state a fresh import
would. (One test per store still runs the child as a fresh interpreter, see test_sigkill.)

keel gives a forked child its own worker id (``os.register_at_fork`` in ``_lease``, read
through ``worker_id()`` at call time), so each child leases and fences as itself.

Protocol (one JSON object per line on stdin / stdout)::

    {"op": "spawn", "module": M, "argv": [...], "env": {...}, "stdout": P, "stderr": P}
        -> {"pid": N}        the child runs M.main_sync(argv) and exits with its return value
    {"op": "wait", "pid": N, "timeout": S}
        -> {"returncode": R}  R is -9 for SIGKILL (like subprocess); None after a timeout,
                              in which case the child was killed
    {"op": "poll", "pid": N, "timeout": 0}
        -> {"returncode": R}  None while the child runs
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------- server


#: Imported up front besides the child scripts: what keel imports lazily on a child's path.
PRELOAD = ("keel.store._sqlite", "keel.store._postgres", "concurrent.futures.thread")


def serve(module_names: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    modules = {name: importlib.import_module(name) for name in module_names}
    for name in PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "spawn":
                reply: dict[str, Any] = {"pid": _spawn(modules[request["module"]], request)}
            else:  # wait (poll: timeout 0, and a running child is left alone)
                reply = _wait(int(request["pid"]), float(request["timeout"]),
                              kill=request["op"] == "wait")
        except Exception as exc:  # reported to the client, which fails the test
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _spawn(module: ModuleType, request: dict[str, Any]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        os.dup2(os.open(request["stdout"], flags, 0o644), 1)
        os.dup2(os.open(request["stderr"], flags, 0o644), 2)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [str(module.__file__), *request["argv"]]
        code = int(module.main_sync(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float, *, kill: bool = True) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status)}
        if time.monotonic() >= deadline:
            if kill:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return {"returncode": None}
        time.sleep(0.002)


# ------------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Finished:
    """A child's exit: ``returncode`` (``-9`` when SIGKILLed), its stdout and stderr."""

    returncode: int | None
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def reply(self) -> dict[str, Any]:
        """The JSON object the child printed last."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"the child printed nothing (exit {self.returncode}): {self.stderr}"
        return dict(json.loads(lines[-1]))


@dataclass(frozen=True)
class Spawned:
    pid: int
    stdout: Path
    stderr: Path


class ForkServer:
    """The client: ``run`` a child to its end, or ``spawn`` it and ``wait`` for it."""

    def __init__(self, modules: list[str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *modules],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(HERE))
        self._count = 0

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the crash-test fork server died (exit {self._proc.poll()})")
        reply = dict(json.loads(line))
        if "error" in reply:
            raise RuntimeError(f"fork server: {reply['error']}")
        return reply

    def spawn(self, module: str, argv: list[str], env: dict[str, str], out_dir: Path) -> Spawned:
        self._count += 1
        stem = out_dir / f"child-{self._count}"
        out, err = stem.with_suffix(".out"), stem.with_suffix(".err")
        reply = self._ask({"op": "spawn", "module": module, "argv": argv, "env": env,
                           "stdout": str(out), "stderr": str(err)})
        return Spawned(int(reply["pid"]), out, err)

    def wait(self, child: Spawned, timeout: float = 60.0) -> Finished:
        code = self._ask({"op": "wait", "pid": child.pid, "timeout": timeout})["returncode"]
        result = Finished(code, child.stdout.read_text(), child.stderr.read_text())
        assert code is not None, f"the child hung for {timeout} s and was killed: {result.stderr}"
        return result

    def poll(self, child: Spawned) -> Finished | None:
        """How the child ended, or None while it runs."""
        code = self._ask({"op": "poll", "pid": child.pid, "timeout": 0})["returncode"]
        if code is None:
            return None
        return Finished(code, child.stdout.read_text(), child.stderr.read_text())

    def run(self, module: str, argv: list[str], env: dict[str, str], out_dir: Path,
            timeout: float = 60.0) -> Finished:
        return self.wait(self.spawn(module, argv, env, out_dir), timeout)

    def close(self) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()


if __name__ == "__main__":
    serve(sys.argv[1:])
