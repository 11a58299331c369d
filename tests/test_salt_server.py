"""The test server's `python` launcher (tests/warm_python.py) stands in for the interpreter.

Scripts under test (the device check, a DDP run's second rank, the terminal tests) start Python
processes through it; each must behave as `python ARGS` would: arguments, folder, environment,
descriptors, exit status, signals, and which copy of salt it imports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.cli_support import gone_within
from tests.conftest import REPO, python_env, run_python


@pytest.fixture(scope="module")
def launcher() -> dict[str, str]:
    """The environment (os.environ plus PYTHON and the socket) and the launcher's path."""
    return {**os.environ, **python_env()}


def python(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [env["PYTHON"], *args], env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


def test_code_gets_arguments_folder_environment_streams_and_exit_status(launcher, tmp_path):
    code = (
        "import os, sys\n"
        "print(sys.argv, os.getcwd(), os.environ['MARK'], sys.stdin.read().upper())\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    env = {**launcher, "MARK": "here"}
    result = python(env, "-c", code, "a", "b c", input="stdin text", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stdout == f"['-c', 'a', 'b c'] {tmp_path} here STDIN TEXT\n"
    assert result.stderr == "to stderr\n"
    message = python(launcher, "-c", "import sys; sys.exit('bad input')")
    assert (message.returncode, message.stderr) == (1, "bad input\n")
    error = python(launcher, "-c", "raise ValueError('boom')")
    assert error.returncode == 1 and "ValueError: boom" in error.stderr


def test_module_and_script_see_their_argv_and_search_path(launcher, tmp_path):
    (tmp_path / "tool.py").write_text("import sys\nprint(sys.argv[1:], sys.path[0], __name__)\n")
    module = python(launcher, "-m", "tool", "x", cwd=tmp_path)
    assert module.stdout == f"['x'] {tmp_path} __main__\n", module.stderr
    script = python(launcher, str(tmp_path / "tool.py"), "y", cwd="/")
    assert script.stdout == f"['y'] {tmp_path} __main__\n", script.stderr


def test_what_it_starts_with_sys_executable_comes_back_to_the_server(launcher):
    code = (
        "import os, subprocess, sys\n"
        "inner = 'import os, sys; print(os.getppid(), sys.executable)'\n"
        "out = subprocess.run([sys.executable, '-c', inner], capture_output=True, text=True)\n"
        "print(os.getppid(), sys.executable, out.stdout.strip())\n"
    )
    result = python(launcher, "-c", code)
    server, executable, inner_parent, inner_executable = result.stdout.split()
    assert executable == inner_executable == launcher["PYTHON"]
    assert inner_parent == server  # forked by the server too, not by the outer child


def test_other_descriptors_are_passed_on(launcher):
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [launcher["PYTHON"], "-c", f"import os; os.write({write}, b'through fd {write}')"],
            env=launcher, pass_fds=[write],
        )  # fmt: skip
        os.close(write)
        assert proc.wait(60) == 0
        assert os.read(read, 100) == f"through fd {write}".encode()
    finally:
        os.close(read)


def test_a_signal_reaches_the_child_and_its_status_is_the_launchers(launcher):
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [launcher["PYTHON"], "-c", code], env=launcher, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    proc.stdout.close()


def test_killing_the_launchers_group_ends_the_child_and_its_children(launcher):
    code = (
        "import subprocess, time\n"
        "sleeper = subprocess.Popen(['sleep', '60'])\n"
        "print(sleeper.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [launcher["PYTHON"], "-c", code], env=launcher, stdout=subprocess.PIPE, text=True,
        start_new_session=True,  # as the device check starts each part
    )  # fmt: skip
    sleeper = int(proc.stdout.readline())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    assert gone_within(sleeper)  # the server saw the launcher's connection close


def test_options_it_does_not_know_go_to_the_real_interpreter(launcher):
    result = python(launcher, "-W", "ignore", "-c", "import sys; print(sys.executable)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable


def test_another_copy_of_salt_on_the_path_is_the_one_imported(launcher, tmp_path):
    shutil.copytree(REPO / "salt", tmp_path / "copy" / "salt")
    code = "import salt.cli, salt.models; print(salt.__file__, salt.models.__file__)"
    env = {**launcher, "PYTHONPATH": str(tmp_path / "copy")}
    copy = python(env, "-c", code, cwd=tmp_path)
    assert copy.stdout.split() == [
        str(tmp_path / "copy" / "salt" / "__init__.py"),
        str(tmp_path / "copy" / "salt" / "models" / "__init__.py"),
    ], copy.stderr
    installed = python(launcher, "-c", code, cwd=tmp_path)
    assert installed.stdout.split()[0] == str(REPO / "salt" / "__init__.py")


def test_a_ddp_rank_is_not_rank_zero(launcher):
    code = "from lightning.pytorch.utilities import rank_zero_only; print(rank_zero_only.rank)"
    assert python({**launcher, "LOCAL_RANK": "1"}, "-c", code).stdout == "1\n"
    assert python(launcher, "-c", code).stdout == "0\n"


def test_a_tests_child_has_an_empty_stdin_and_its_output_in_files(tmp_path):
    code = (
        "import os, stat, sys\n"
        "print(stat.S_ISCHR(os.fstat(0).st_mode), repr(sys.stdin.read()), os.getcwd())\n"
        "print('err', file=sys.stderr)\n"
    )
    result = run_python(code, [], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (f"True '' {tmp_path}\n", "err\n")
