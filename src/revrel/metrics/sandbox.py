"""Run model-written code in a confined subprocess.

Layers, each of which stops a class of harm on its own:
* a separate process in a fresh temp dir (its cwd and $HOME), with a scrubbed environment and
  ``python -I`` (no user site, no PYTHON* variables);
* rlimits: CPU seconds, address space (memory bombs), file size, open files, processes (fork bombs);
* when started as root: the child drops to uid/gid ``nobody`` before running anything, so the
  filesystem permissions keep it out of the user's files, and it gets a fresh network namespace
  (no interfaces but a down loopback) via unshare(CLONE_NEWNET);
* a prelude inside the child that blocks sockets, process spawning, and file writes outside the temp
  dir, for machines where the kernel layers are unavailable;
* a wall-clock timeout that kills the whole process group.
A program passes only if it exits 0 within the limits; anything else is recorded as a failure.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

NOBODY = 65534
CLONE_NEWNET = 0x40000000

PRELUDE = r'''
import builtins, os, socket, sys
_root = os.path.realpath(os.getcwd())
def _deny(*a, **k):
    raise PermissionError("blocked by the revrel sandbox")
class _NoSocket(socket.socket):
    def __init__(self, *a, **k):
        raise PermissionError("network access blocked by the revrel sandbox")
socket.socket = _NoSocket
socket.create_connection = _deny
socket.socketpair = _deny
for _n in ("fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "spawnv",
           "spawnve", "posix_spawn", "posix_spawnp", "kill", "killpg", "setuid", "chroot"):
    if hasattr(os, _n):
        setattr(os, _n, _deny)
import subprocess
subprocess.Popen = _deny
_open = builtins.open
def _guarded_open(file, mode="r", *a, **k):
    if isinstance(file, int):
        return _open(file, mode, *a, **k)
    path = os.path.realpath(os.fspath(file))
    if any(c in mode for c in "wax+") and not (path == _root or path.startswith(_root + os.sep)):
        raise PermissionError(f"writing outside the sandbox dir is blocked: {path}")
    home = os.environ.get("REVREL_REAL_HOME")
    if home and (path == home or path.startswith(home + os.sep)):
        raise PermissionError("reading the user's home is blocked")
    return _open(file, mode, *a, **k)
builtins.open = _guarded_open
os.remove = os.unlink = os.rmdir = os.rename = os.replace = _deny
del _guarded_open
'''


@dataclass
class SandboxResult:
    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error"
    returncode: int | None
    stdout: str
    stderr: str


def _limits(cpu_s: int, mem_bytes: int, as_root: bool):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if as_root:
            try:
                ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
            except (OSError, AttributeError):
                pass
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_NPROC, (16, 16))  # counts per user; effective once not root

    return apply


def _world_executable(path: str) -> bool:
    """True if uid nobody could execute ``path`` (every parent dir o+x, the file o+x)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        try:
            mode = os.stat(os.sep.join(parts[:i]) or os.sep).st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return True


def _interpreter(as_root: bool) -> tuple[str, bool]:
    """(python to run, whether to drop to nobody). The code needs only the standard library."""
    if not as_root:
        return sys.executable, False
    for cand in (sys.executable, getattr(sys, "_base_executable", ""), shutil.which("python3") or "", "/usr/bin/python3"):
        if cand and _world_executable(cand):
            return os.path.realpath(cand), True
    return sys.executable, False  # no interpreter nobody may run: keep rlimits, netns and the prelude


def run_python(code: str, *, timeout: float = 10.0, cpu_s: int = 10, mem_mb: int = 1024) -> SandboxResult:
    """Execute ``code`` (a whole program) confined; never raises for anything the code does."""
    tmp = tempfile.mkdtemp(prefix="revrel-sandbox-")
    python, as_root = _interpreter(os.geteuid() == 0)
    try:
        if as_root:
            os.chown(tmp, NOBODY, NOBODY)
        prog = os.path.join(tmp, "prog.py")
        with open(prog, "w", encoding="utf-8") as fh:
            fh.write(PRELUDE + "\n" + code + "\n")
        if as_root:
            os.chown(prog, NOBODY, NOBODY)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "REVREL_REAL_HOME": os.path.realpath(os.path.expanduser("~"))}
        try:
            proc = subprocess.Popen([python, "-I", "-S", prog], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits(cpu_s, mem_mb << 20, as_root))
        except OSError as exc:
            return SandboxResult(False, "error", None, "", f"could not start sandbox: {exc}")
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            return SandboxResult(False, "timeout", None, out.decode(errors="replace")[-2000:], err.decode(errors="replace")[-2000:])
        rc = proc.returncode
        status = "passed" if rc == 0 else ("timeout" if rc in (-signal.SIGXCPU, -signal.SIGKILL) else "failed")
        return SandboxResult(rc == 0, status, rc, out.decode(errors="replace")[-2000:], err.decode(errors="replace")[-2000:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
