"""Run untrusted Python (model-written HumanEval solutions) in a separate, locked-down process.

Layers, each enough on its own for the hostile programs in tests/test_eval_sandbox.py:
1. **Resource limits** (setrlimit in the child): CPU seconds, address space, file size, open files, process count,
   no core dumps; plus a wall-clock timeout after which the whole process group is killed.
2. **Namespaces** when the OS permits (`unshare`): a new network namespace (no interfaces but a down loopback,
   so no network at all) and a new PID namespace (when its first process dies the kernel kills every process in
   it, so a fork bomb cannot outlive the run).
3. **Privilege drop**: run as root (containers), the child becomes `nobody`, so it cannot write or delete files
   it does not own, and RLIMIT_NPROC (which root ignores) applies. Skipped when `nobody` could not read the
   interpreter (a Python installed under a private home directory).
4. **An audit hook** installed before the program runs: creating sockets, starting processes, loading native
   libraries through ctypes, and writing, deleting or renaming anything outside the temporary directory end the
   process at once (exit code 97) — it exits rather than raising so the program cannot catch and ignore it.
The child starts in an empty temporary directory with a scrubbed environment and `python -I -B` (no user site,
no PYTHON* variables, no bytecode writes); stdout/stderr go to size-limited files, never to unbounded pipes.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

VIOLATION_EXIT = 97
NOBODY = 65534

# Runs inside the child before the program; argv: program path, work dir, drop-to uid ("-" to keep).
_GUARD = r'''
import os, sys
prog, work, drop = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3]
if drop != "-":
    uid = int(drop)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
os.chdir(work)
sys.dont_write_bytecode = True
_write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_deny = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
         "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.vfork",
         "subprocess.Popen", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
         "os.setuid", "os.chroot", "os.fchdir", "pty.spawn", "resource.setrlimit", "resource.prlimit"}
_path_events = {"os.remove", "os.unlink", "os.rmdir", "os.rename", "os.replace", "shutil.rmtree", "os.truncate",
                "os.chmod", "os.chown", "os.link", "os.symlink", "os.mkdir", "os.utime", "os.setxattr",
                "os.removexattr", "shutil.move", "shutil.copyfile", "shutil.copytree"}
_exit = os._exit
_write = os.write
_realpath = os.path.realpath

def _inside(p):
    if isinstance(p, int):
        return True  # an already-open descriptor: its path was checked when it was opened
    try:
        p = os.fsdecode(p)
    except TypeError:
        return False
    full = _realpath(p)
    return full == work or full.startswith(work + os.sep)

def _violation(event, detail):
    _write(2, f"sandbox violation: {event} {detail!r}\n".encode("utf-8", "replace"))
    _exit(VIOLATION)

VIOLATION = @VIOLATION@

def _hook(event, args):
    if event in _deny:
        _violation(event, args[:2] if isinstance(args, tuple) else args)
    elif event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                  (isinstance(flags, int) and flags & _write_flags)
        if writing and not _inside(path):
            _violation(event, path)
    elif event in _path_events:
        for p in args[:2]:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                _violation(event, p)

sys.addaudithook(_hook)
with open(prog, "r", encoding="utf-8") as f:
    source = f.read()
code = compile(source, "program.py", "exec")
del f, source, prog, drop
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass
class SandboxResult:
    status: str  # "passed", "failed", "timeout"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=None)
def namespace_prefix() -> tuple[str, ...]:
    """The `unshare` command line this machine permits: net + pid namespaces as root, or inside a new user
    namespace otherwise; () when neither works (the audit hook still blocks sockets)."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return ()
    for flags in (("-n", "-p", "-f", "--kill-child"), ("-r", "-n", "-p", "-f", "--kill-child"), ("-n",), ("-rn",)):
        try:
            ok = subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return (exe, *flags)
    return ()


def _limits(cpu_s: int, memory_mb: int, file_mb: int, nproc: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    return apply


@functools.lru_cache(maxsize=None)
def _world_readable_python() -> bool:
    """Can `nobody` run this interpreter? Not when it lives under a private home (e.g. /root/.pyenv): then the
    privilege drop is skipped and the audit hook and namespaces carry the containment alone."""
    import sysconfig
    for top in {sys.executable, sysconfig.get_paths()["stdlib"], sys.base_prefix}:
        p = Path(top).resolve()
        for d in [p, *p.parents]:
            try:
                mode = d.stat().st_mode
            except OSError:
                return False
            need = 0o005 if d.is_dir() else 0o004
            if mode & need != need:
                return False
    return True


def _user_procs() -> int:
    """Processes this user owns: RLIMIT_NPROC counts all of them, so a non-root limit must sit above this."""
    uid, n = os.getuid(), 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                n += d.stat().st_uid == uid
            except OSError:
                pass
    return n


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024, file_mb: int = 16, max_procs: int = 16,
               namespaces: bool = True, drop_privileges: bool = True, max_output: int = 64 << 10) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; status "passed" iff it exits 0 within `timeout`."""
    root = Path(tempfile.mkdtemp(prefix="smelt-sandbox-"))
    work = root / "work"
    work.mkdir()
    prog, guard = root / "program.py", root / "guard.py"
    prog.write_text(code, encoding="utf-8")
    guard.write_text(_GUARD.replace("@VIOLATION@", str(VIOLATION_EXIT)), encoding="utf-8")
    drop = "-"
    is_root = os.getuid() == 0
    if drop_privileges and is_root and _world_readable_python():
        drop = str(NOBODY)
        os.chown(work, NOBODY, NOBODY)
        os.chmod(root, 0o755)
        for f in (prog, guard):
            f.chmod(0o644)
    prefix = namespace_prefix() if namespaces else ()
    nproc = max_procs if is_root else _user_procs() + max_procs
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
    cmd = [*prefix, sys.executable, "-I", "-B", str(guard), str(prog), str(work), drop]
    out_path, err_path = root / "stdout", root / "stderr"
    t0 = time.perf_counter()
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True,
                                preexec_fn=_limits(max(1, int(timeout) + 1), memory_mb, file_mb, nproc))
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:  # the whole session: the program, and anything it managed to start
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
    dt = time.perf_counter() - t0
    stdout = _read_capped(out_path, max_output)
    stderr = _read_capped(err_path, max_output)
    shutil.rmtree(root, ignore_errors=True)
    rc = proc.returncode
    if timed_out:
        return SandboxResult("timeout", rc, stdout, stderr, dt, f"wall-clock timeout after {timeout}s")
    if rc == 0:
        return SandboxResult("passed", rc, stdout, stderr, dt)
    if rc == VIOLATION_EXIT:
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else "sandbox violation"
    elif rc is not None and rc < 0:
        reason = f"killed by {signal.Signals(-rc).name}"
    elif rc is not None and rc > 128 and prefix:  # unshare reports a signalled child as 128 + signal
        try:
            reason = f"killed by {signal.Signals(rc - 128).name}"
        except ValueError:
            reason = f"exit code {rc}"
    else:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        reason = last or f"exit code {rc}"
    return SandboxResult("failed", rc, stdout, stderr, dt, reason)


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", "replace")
