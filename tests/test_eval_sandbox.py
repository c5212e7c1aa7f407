"""The HumanEval sandbox contains hostile programs, reports them failed, and leaves the host untouched."""

import os
import socket
import time

import pytest

from smelt.eval.sandbox import namespace_prefix, run_python

# "full" = every layer this machine permits; "hook" = only rlimits + the audit hook (the fallback layer), to show
# it holds on its own where namespaces or privilege dropping are unavailable.
LAYERS = {"full": {}, "hook": {"namespaces": False, "drop_privileges": False}}


@pytest.fixture(params=sorted(LAYERS))
def layer(request):
    return LAYERS[request.param]


def test_good_program_passes(layer):
    r = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')\n", **layer)
    assert r.status == "passed" and r.stdout.strip() == "ok"


def test_failing_assertion_fails(layer):
    r = run_python("assert 1 == 2, 'wrong answer'\n", **layer)
    assert r.status == "failed" and "wrong answer" in r.reason


def test_infinite_loop_times_out(layer):
    t0 = time.time()
    r = run_python("while True:\n    pass\n", timeout=1.5, **layer)
    assert r.status in ("timeout", "failed") and not r.passed
    assert time.time() - t0 < 10


def test_fork_bomb_is_contained(layer):
    before = len(os.listdir("/proc"))
    r = run_python("import os\nwhile True:\n    os.fork()\n", timeout=3, **layer)
    assert not r.passed
    time.sleep(0.2)
    assert len(os.listdir("/proc")) < before + 20  # nothing left running on the host


def test_subprocess_is_blocked(layer):
    r = run_python("import subprocess\nsubprocess.run(['true'])\n", **layer)
    assert r.status == "failed" and "violation" in r.reason


def test_huge_allocation_fails(layer):
    r = run_python("x = bytearray(10 * 1024**3)\nprint(len(x))\n", memory_mb=512, **layer)
    assert r.status == "failed" and "MemoryError" in r.reason


def test_write_outside_tempdir_is_blocked(tmp_path, layer):
    target = tmp_path / "pwned.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')\n", **layer)
    assert not r.passed and not target.exists()
    # writing inside the sandbox's own temp dir is fine
    assert run_python("open('scratch.txt', 'w').write('x')\nprint(open('scratch.txt').read())\n", **layer).passed


def test_deleting_files_is_blocked(tmp_path, layer):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a").write_text("a")
    code = (f"import os, shutil\ntry:\n    os.remove({str(victim)!r})\nexcept Exception:\n    pass\n"
            f"shutil.rmtree({str(d)!r}, ignore_errors=True)\nprint('survived')\n")
    r = run_python(code, **layer)
    assert not r.passed and "violation" in r.reason  # the violation ends the program: it cannot catch it
    assert victim.read_text() == "precious" and (d / "a").exists()


def test_socket_is_blocked(layer):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    srv.settimeout(0.5)
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"
    r = run_python(code, **layer)
    assert not r.passed
    with pytest.raises(OSError):  # nothing reached the host's listening socket
        srv.accept()
    srv.close()


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SMELT_SECRET_TOKEN", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nprint(os.listdir('.'))\n")
    assert r.passed and "SMELT_SECRET_TOKEN" not in r.stdout and "hunter2" not in r.stdout
    assert r.stdout.strip().endswith("[]")  # started in an empty directory


def test_network_namespace_when_permitted():
    if not namespace_prefix():
        pytest.skip("unshare not permitted here; the audit hook is the network guard")
    # Inside the namespace even the audit hook aside, no interface is up: the only link is a down loopback.
    r = run_python("print(open('/proc/net/dev').read())\n")
    assert r.passed and "eth0" not in r.stdout
