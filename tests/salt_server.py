"""`salt` processes for the tests, forked from one that has already imported torch and Lightning.

A `salt` process spends 3-5 s of CPU importing torch, Lightning and salt before it reads its
command line, and the suite starts dozens of them. This server pays that once per pytest
worker: it imports `salt.cli` (what every `salt fit` imports first), then for each request forks
a child that is, from there on, a `python -m salt.main ARGS` (or `-c CODE`, or `SCRIPT`) of its
own: its own pid, working folder, environment, standard streams, signal handlers, exit status
and `atexit` clean-up. What the server read from the environment at import (Lightning's rank) is
read again, and a search path that holds another copy of salt gets that copy.

Requests come two ways:

* from the tests (`SaltServer`, one per pytest process), as JSON lines on the server's stdin:
  ``{"module" or "code", "args", "cwd", "env", "stdout", "stderr"}`` (stdout and stderr are
  files; stdin is /dev/null). The server answers ``{"pid"}`` when the child has started and
  ``{"returncode"}`` (negative: killed by that signal) when it has ended.
* from processes that the children start with `sys.executable`, which is a launcher of this
  server (tests/warm_python.py) in every child: over a Unix socket, with the launcher's open
  descriptors. A DDP rank, a device-check part or a benchmark's setting is thus forked here too,
  in a process group of its own that ends when its launcher dies.

What a child cannot show is what happens while torch and Lightning are imported (their warnings
went to the server's log). The tests of what a user sees from start to end, and of signals to a
process group, start `salt` as a fresh process.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.machinery
import json
import os
import runpy
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

try:
    from tests.warm_python import HEADER, SOCKET_VAR
except ImportError:  # run as a script, with tests/ first on the search path
    from warm_python import HEADER, SOCKET_VAR

#: imported before the first fork: what every `salt fit`, `test` and `to_onnx` imports, and the
#: plotting that every `salt test` and `salt plot` imports (puma, matplotlib, pandas: 0.4 s)
PRELOAD = ("torch", "lightning", "salt.cli", "puma")


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as the interpreter does for `sys.exit("message")`
    return 1


def _take_fds(fds: dict[int, int]) -> None:
    """Make each received descriptor (value) this process's descriptor number (key)."""
    high = {}
    above = max([1000, *fds]) + 1
    for target, fd in fds.items():  # out of the way first: a target may hold another one
        high[target] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above)
        os.close(fd)
    for target, fd in high.items():
        os.dup2(fd, target)
        os.close(fd)


def _std_streams(unbuffered: bool) -> None:
    """Text streams on descriptors 0-2 as a fresh interpreter makes them: line-buffered on a
    terminal, written through with `-u` or PYTHONUNBUFFERED."""
    write_through = unbuffered or bool(os.environ.get("PYTHONUNBUFFERED"))
    streams = []
    for fd, mode in ((0, "r"), (1, "w"), (2, "w")):
        try:
            os.fstat(fd)
        except OSError:  # not open: None, as in a fresh interpreter
            streams.append(None)
            continue
        tty = os.isatty(fd)
        stream = open(  # noqa: SIM115  (they live as long as the process)
            fd, mode, buffering=1 if tty and mode == "w" else -1, closefd=False,
            errors="backslashreplace" if fd == 2 else None,
        )  # fmt: skip
        if mode == "w" and (write_through or fd == 2):
            stream.reconfigure(write_through=True)
        streams.append(stream)
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams


def _child(request: dict, fds: dict[int, int] | None, close: list) -> None:
    """Become `python -m MODULE ARGS` (or `-c CODE`, or `SCRIPT`) as the request describes,
    with `fds` (number -> descriptor received from a launcher) or, without them, /dev/null and
    the request's files as stdin, stdout and stderr; never returns."""
    code = 1
    try:
        for item in close:  # the server's sockets and pipes are not the child's
            with contextlib.suppress(OSError):
                item.close() if hasattr(item, "close") else os.close(item)
        if fds is not None:
            os.setpgid(0, 0)  # its own group: a launcher's death ends it and its workers
            _take_fds(fds)
        else:  # (descriptor 0 was the server's stdin, closed above: it may come back here)
            write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], write),
                                    (2, request["stderr"], write)):  # fmt: skip
                opened = os.open(path, flags, 0o644)
                if opened != fd:
                    os.dup2(opened, fd)
                    os.close(opened)
        for sig, handler in ((signal.SIGINT, signal.default_int_handler),
                             (signal.SIGTERM, signal.SIG_DFL)):  # fmt: skip
            signal.signal(sig, handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[SOCKET_VAR] = _SERVER["socket"]
        sys.executable = _SERVER["python"]  # what it starts with sys.executable comes back here
        _std_streams(request.get("unbuffered", False))
        # the search path `python -m` (or `-c`) in that folder with that PYTHONPATH starts with
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        if "script" in request:
            first = str(Path(request["script"]).resolve().parent)
        else:
            first = str(Path.cwd()) if "module" in request else ""
        sys.path[0:1] = [first, *extra]
        _forget_another_salt()
        # what Lightning read from the environment when the server imported it: a DDP rank
        # that the server forks is not rank 0
        from lightning.fabric.utilities.rank_zero import _get_rank, rank_zero_only

        rank_zero_only.rank = _get_rank() or 0
        if threads := request["env"].get("OMP_NUM_THREADS"):
            import torch

            torch.set_num_threads(int(threads))
        try:
            if "module" in request:
                sys.argv = [request["module"], *request["args"]]
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            elif "script" in request:
                sys.argv = [request["script"], *request["args"]]
                runpy.run_path(request["script"], run_name="__main__")
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


def _forget_another_salt() -> None:
    """Where the child's search path holds another copy of salt (a test's copy of the code, an
    installed one) than the server imported: drop the server's salt modules, so that the child
    imports that copy, as a fresh interpreter would. (Salt itself imports in 0.3 s once torch
    and Lightning are in.)"""
    loaded = sys.modules.get("salt")
    spec = importlib.machinery.PathFinder.find_spec("salt", sys.path)
    if loaded is None or spec is None or spec.origin is None:
        return  # not found on the path: the installed (editable) salt, the one imported
    if Path(spec.origin).resolve() != Path(loaded.__file__).resolve():
        for name in [m for m in sys.modules if m == "salt" or m.startswith("salt.")]:
            del sys.modules[name]


#: this server's socket and launcher (set by `serve`)
_SERVER: dict[str, str] = {}


def _write_launcher(folder: Path) -> Path:
    launcher = folder / "python"
    client = Path(__file__).with_name("warm_python.py")
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{client}" "$@"\n')
    launcher.chmod(0o755)
    return launcher


def _receive(conn: socket.socket) -> tuple[dict, dict[int, int]]:
    """A launcher's request and the descriptors it sent (its number -> ours)."""
    data, fds, _, _ = socket.recv_fds(conn, HEADER.size, 256)
    while len(data) < HEADER.size:
        data += conn.recv(HEADER.size - len(data))
    (size,) = HEADER.unpack(data)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ConnectionError("the launcher went away")
        payload += chunk
    request = json.loads(payload)
    return request, dict(zip(request.pop("fds"), fds))


def _fork(request: dict, fds: dict[int, int] | None, close: list) -> int:
    """Start the child for `request` (see `_child`); its pid."""
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, fds, close)
    return pid


def serve() -> None:
    """Answer requests on stdin (from the tests) and on a socket (from launchers) until stdin
    closes. Each request is a forked child; the server waits for none of them."""
    answers = os.dup(1)
    os.dup2(2, 1)  # the server's own output goes to its log, never into the answers
    for name in PRELOAD:
        __import__(name)
    folder = Path(tempfile.mkdtemp(prefix="salt_python_"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / "socket"))
    listener.listen(64)
    _SERVER.update(socket=str(folder / "socket"), python=str(_write_launcher(folder)))
    stdin = sys.stdin.buffer.raw
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "stdin")
    selector.register(listener, selectors.EVENT_READ, "listener")
    launched: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    os.write(answers, (json.dumps({"ready": True, **_SERVER}) + "\n").encode())
    pending = b""
    try:
        while True:
            for key, _ in selector.select(timeout=0.02):
                close = [answers, listener, stdin, *launched.values()]
                if key.data == "stdin":
                    chunk = os.read(stdin.fileno(), 1 << 20)
                    if not chunk:
                        return
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        pid = _fork(json.loads(line), None, close)
                        os.write(answers, (json.dumps({"pid": pid}) + "\n").encode())
                elif key.data == "listener":
                    conn, _ = listener.accept()
                    try:
                        request, fds = _receive(conn)
                    except (OSError, ValueError, ConnectionError):
                        conn.close()
                        continue
                    pid = _fork(request, fds, [*close, conn])
                    for fd in fds.values():
                        os.close(fd)
                    conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
                    launched[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
                else:  # a launcher's connection: readable only when it has gone
                    pid = key.data
                    selector.unregister(key.fileobj)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            while True:  # reap every child that has ended
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                code = os.waitstatus_to_exitcode(status)
                answer = (json.dumps({"returncode": code}) + "\n").encode()
                if (conn := launched.pop(pid, None)) is None:  # asked for on stdin
                    os.write(answers, answer)
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(answer)
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(conn)
                conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
        self.launcher = {"python": ready["python"], "socket": ready["socket"]}

    def python_env(self) -> dict[str, str]:
        """Environment variables that make `$PYTHON` (and `sys.executable` in what it runs) a
        launcher of this server's children: for tests of scripts that start Python processes.
        """
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            return {"PYTHON": self.launcher["python"], SOCKET_VAR: self.launcher["socket"]}

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
        """Stop the server, and remove its output files, and its log unless it died."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.proc is None or self.proc.returncode == 0:
            shutil.rmtree(self.log.parent, ignore_errors=True)


_SHARED: list[SaltServer] = []


def shared_server(env: dict[str, str]) -> SaltServer:
    """This pytest process's server (started with `env` on first use), closed when pytest
    exits. A request whose PYTHONPATH holds another copy of salt gets that copy: the child
    imports it anew."""
    if not _SHARED:
        log = Path(tempfile.mkdtemp(prefix="salt_server_log_")) / "server.log"
        _SHARED.append(SaltServer(env, log))
        atexit.register(_SHARED[0].close)
    return _SHARED[0]


if __name__ == "__main__":
    serve()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # torch's and Lightning's teardown would cost the suite a second at its end
