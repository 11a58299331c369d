"""`salt` processes for the tests, forked from one that has already imported torch and Lightning.

A `salt` process spends 3-5 s of CPU importing torch, Lightning and salt before it reads its
command line, and the suite starts dozens of them. This server pays that once per pytest
worker: it imports `salt.cli` (what every `salt fit` imports first), then for each request forks
a child that is, from there on, a `python -m salt.main ARGS` of its own: its own pid, working
folder, environment, stdin (/dev/null), stdout and stderr (files), signal handlers, exit status
and `atexit` clean-up. Its data loader workers and DDP ranks are processes it starts itself.

What the child cannot show is what happens while those modules are imported (their warnings
went to the server's log). The tests of what a user sees from start to end run `salt` as a
fresh process (`run_salt(..., fresh=True)`).

Protocol (JSON lines): the client (`SaltServer`, one per pytest process) writes a request
``{"module" or "code", "args", "cwd", "env", "stdout", "stderr"}`` on the server's stdin; the
server answers ``{"pid"}`` when the child has started and ``{"returncode"}`` (negative: killed
by that signal) when it has ended.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

#: imported before the first fork: what every `salt fit`, `test` and `to_onnx` imports
PRELOAD = ("torch", "lightning", "salt.cli")


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as the interpreter does for `sys.exit("message")`
    return 1


def _child(request: dict, answers: int) -> None:
    """Become `python -m MODULE ARGS` as the request describes; never returns."""
    code = 1
    try:
        os.close(answers)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        for sig, handler in ((signal.SIGINT, signal.default_int_handler),
                             (signal.SIGTERM, signal.SIG_DFL)):  # fmt: skip
            signal.signal(sig, handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # the search path `python -m` (or `-c`) in that folder with that PYTHONPATH starts with
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[0:1] = [str(Path.cwd()) if "module" in request else "", *extra]
        if threads := request["env"].get("OMP_NUM_THREADS"):
            import torch

            torch.set_num_threads(int(threads))
        try:
            if "module" in request:
                sys.argv = [request["module"], *request["args"]]
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            else:
                sys.argv = ["-c", *request["args"]]
                exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve() -> None:
    """Answer requests on stdin until it closes."""
    answers = os.dup(1)
    os.dup2(2, 1)  # the server's own output goes to its log, never into the answers
    for name in PRELOAD:
        __import__(name)
    os.write(answers, (json.dumps({"ready": True}) + "\n").encode())
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, answers)
        os.write(answers, (json.dumps({"pid": pid}) + "\n").encode())
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os.write(answers, (json.dumps({"returncode": code}) + "\n").encode())


class SaltServer:
    """The client: starts the server on first use and runs each command in a child of it."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.tmp = Path(tempfile.mkdtemp(prefix="salt_server_"))

    def _start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, env=self.env, cwd=self.tmp,
            )  # fmt: skip
        ready = self._answer(None)
        if not ready.get("ready"):
            raise RuntimeError(f"the salt test server did not start; see {self.log}")

    def _answer(self, timeout: float | None) -> dict:
        if timeout is not None and not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the salt test server died; see {self.log}")
        return json.loads(line)

    def run(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        timeout: float,
        module: str | None = None,
        code: str | None = None,
    ) -> subprocess.CompletedProcess:
        """`python -m MODULE ARGV` (or `python -c CODE ARGV`) in `cwd` with exactly `env`."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            out, err = self.tmp / "stdout", self.tmp / "stderr"
            what = {"module": module} if module else {"code": code}
            request = {"args": argv, "cwd": str(cwd), "env": env, "stdout": str(out),
                       "stderr": str(err), **what}  # fmt: skip
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            pid = self._answer(60)["pid"]
            timed_out = False
            try:
                returncode = self._answer(timeout)["returncode"]
            except TimeoutError:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                returncode = self._answer(60)["returncode"]
            stdout = out.read_text(errors="replace")
            stderr = err.read_text(errors="replace")
        command = [sys.executable, *(["-m", module] if module else ["-c", code]), *argv]
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


_SHARED: dict[str, SaltServer] = {}


def shared_server(env: dict[str, str]) -> SaltServer:
    """This pytest process's server for `env` (one per PYTHONPATH: a path that holds another
    copy of salt needs a server that imported that copy), closed when pytest exits."""
    key = env.get("PYTHONPATH", "")
    if key not in _SHARED:
        log = Path(tempfile.mkdtemp(prefix="salt_server_log_")) / "server.log"
        _SHARED[key] = SaltServer(env, log)
        atexit.register(_SHARED[key].close)
    return _SHARED[key]


if __name__ == "__main__":
    serve()
