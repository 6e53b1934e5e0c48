"""Model-written code must be stopped or refused, and recorded as failed, never crash the evaluator."""

import os
import socket
import threading
from pathlib import Path

import pytest

from revrel.metrics.sandbox import run_python


def test_correct_program_passes():
    r = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')")
    assert r.passed and r.stdout.strip() == "ok"


def test_failing_assert_fails():
    r = run_python("assert 1 == 2")
    assert not r.passed and r.status == "failed" and "AssertionError" in r.stderr


def test_infinite_loop_is_stopped():
    r = run_python("while True:\n    pass", timeout=3, cpu_s=2)
    assert not r.passed and r.status == "timeout"


def test_sleeping_forever_is_stopped():
    r = run_python("import time\ntime.sleep(1000)", timeout=2)
    assert not r.passed and r.status == "timeout"


def test_memory_bomb_10gb_is_refused():
    r = run_python("x = bytearray(10 * 1024 ** 3)\nprint('allocated')", mem_mb=512)
    assert not r.passed and "allocated" not in r.stdout and "MemoryError" in r.stderr


def test_fork_bomb_is_refused():
    r = run_python("import os\nwhile True:\n    os.fork()", timeout=5)
    assert not r.passed


def test_subprocess_is_refused():
    r = run_python("import subprocess\nsubprocess.run(['echo', 'hi'])")
    assert not r.passed and "blocked" in r.stderr


def test_write_outside_tempdir_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    os.chmod(tmp_path, 0o777)
    r = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert not r.passed and not target.exists()


def test_write_inside_tempdir_is_allowed():
    r = run_python("open('scratch.txt', 'w').write('x')\nprint(open('scratch.txt').read())")
    assert r.passed and r.stdout.strip() == "x"


def test_reading_home_is_refused():
    home = Path.home()
    secret = home / ".revrel-sandbox-test-secret"
    secret.write_text("s3cret")
    try:
        r = run_python(f"print(open({str(secret)!r}).read())")
        assert not r.passed and "s3cret" not in r.stdout
    finally:
        secret.unlink()


def test_socket_connect_is_refused():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = []
    t = threading.Thread(target=lambda: got.append(srv.accept()), daemon=True)
    t.start()
    try:
        r = run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
        assert not r.passed and "connected" not in r.stdout
        t.join(0.5)
        assert not got
    finally:
        srv.close()


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "abc123")
    r = run_python("import os\nprint(os.environ.get('SECRET_TOKEN'))")
    assert r.passed and r.stdout.strip() == "None"


@pytest.mark.parametrize("code", ["raise SystemExit(3)", "import sys; sys.exit('bad')", "syntax error here", "import os; os._exit(1)"])
def test_odd_programs_are_failures_not_crashes(code):
    assert not run_python(code).passed
