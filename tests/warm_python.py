"""`python`, run by the test server: the interpreter that the server's children see as theirs.

The test server (tests/salt_server.py) writes a launcher script that runs this file and sets
`sys.executable` to it in every process it forks. A command that a `salt` process (or a test
driver) starts with `sys.executable` then reaches the server too, instead of importing torch
and Lightning once more: a DDP rank, a device-check part, a benchmark's setting.

This file imports only the standard library and runs with ``-I -S``, so that it starts in
milliseconds. It understands ``[-u] [-B] (-c CODE | -m MODULE | SCRIPT) ARGS``; for anything
else, or when the server cannot be reached, it becomes the real interpreter (`os.execv`).

It hands the server its arguments, folder, environment and every open file descriptor
(stdin, stdout, stderr and any others, e.g. a pty or a pipe's end passed on by its caller), so
the forked child writes where this process would have. It forwards the signals a process can
catch to the child, exits with the child's status (dying by the same signal if the child did),
and its death (SIGKILL of its process group on a timeout) ends the child's process group too:
the server watches the connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

#: where the server listens (set in every child's environment)
SOCKET_VAR = "SALT_TEST_PYTHON_SOCKET"
#: signals passed on to the child
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
HEADER = struct.Struct("!Q")  # the length of the JSON request that follows


def parse(argv: list[str]) -> dict | None:
    """`python` arguments -> {"code"|"module"|"script", "args", "unbuffered"}, or None for what
    only the real interpreter understands."""
    unbuffered = False
    i = 0
    while i < len(argv) and argv[i] in ("-u", "-B"):
        unbuffered |= argv[i] == "-u"
        i += 1
    if i >= len(argv):
        return None  # an interactive interpreter
    first, rest = argv[i], argv[i + 1 :]
    if first in ("-c", "-m"):
        if not rest:
            return None
        key = "code" if first == "-c" else "module"
        return {key: rest[0], "args": rest[1:], "unbuffered": unbuffered}
    if first.startswith("-"):
        return None
    return {"script": first, "args": rest, "unbuffered": unbuffered}


def open_fds() -> list[int]:
    """This process's open descriptors (those listed in /proc/self/fd that are still open)."""
    fds = []
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        try:
            os.fstat(fd)
        except OSError:  # the listing's own descriptor, closed by now
            continue
        fds.append(fd)
    return sorted(fds)


def real_python(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *argv])


def main(argv: list[str]) -> None:
    request = parse(argv)
    path = os.environ.get(SOCKET_VAR)
    if request is None or not path:
        real_python(argv)
    fds = open_fds()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        real_python(argv)
    fds = [fd for fd in fds if fd != conn.fileno()]
    request.update(cwd=str(Path.cwd()), env=dict(os.environ), fds=fds)
    payload = json.dumps(request).encode()
    socket.send_fds(conn, [HEADER.pack(len(payload))], fds)
    conn.sendall(payload)
    reader = conn.makefile("r")
    child = json.loads(reader.readline())["pid"]

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    line = reader.readline()
    code = json.loads(line)["returncode"] if line else 1
    if code < 0:  # killed by a signal: so is this process, as the caller expects
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
