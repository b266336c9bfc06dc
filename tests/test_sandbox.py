"""sandbox.py: ordinary results, a hostile suite against the isolation, and the SandboxFusion-compatible server."""
import collections
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout

import pytest
import requests

import sandbox
from sandbox import ExecResult, run_code

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def isolated():
    run_code("pass")  # starts the pool
    return sandbox._POOL.isolated


needs_isolation = pytest.mark.skipif(not isolated(), reason="the kernel refuses user namespaces here: fallback mode")


def procs():
    """(pid, uid, ppid, state) of every process on the machine, read from /proc."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
        except OSError:
            continue  # gone meanwhile
        out.append((int(pid), int(fields["Uid"].split()[0]), int(fields["PPid"]), fields["State"].split()[0]))
    return out


def wait_until(cond, secs=10.0):  # generous: the machine may be loaded; it returns once cond holds
    end = time.monotonic() + secs
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return cond()


def descendants(pid):
    """Every process below `pid`, as (pid, uid, ppid, state)."""
    kids = collections.defaultdict(list)
    for p in procs():
        kids[p[2]].append(p)
    out, todo = [], [pid]
    while todo:
        below = kids[todo.pop()]
        out += below
        todo += [p[0] for p in below]
    return out


def only_warm_left():
    """Nothing of a finished call is left: below the pool's process only the server and its waiting sandboxes."""
    return len(descendants(sandbox._POOL.proc.pid)) <= sandbox.WARM + 1


# -----------------------------------------------------------------------------
# Pure helpers


def test_truncate_keeps_head_and_tail_with_marker():
    text = "H" * 3000 + "M" * 5000 + "T" * 3000
    out = sandbox.truncate(text, 1000)
    assert out.startswith("H" * 500 + "\n") and out.endswith("\n" + "T" * 500)
    assert f"[{11000 - 1000} characters truncated]" in out
    assert sandbox.truncate("short", 1000) == "short"


@pytest.mark.parametrize("code,printed", [
    ("x = 3\nx * 2", "6\n"),
    ("y = 1; y + 1  # a comment", "2\n"),
    ("print('a')", "a\n"),  # value None: nothing more
    ("(1 +\n 2)", "3\n"),
    ("s = 'é'\ns", "'é'\n"),
    ("x = 1", ""),
])
def test_with_echo_prints_the_last_expression(code, printed):
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(sandbox.with_echo(code), {})
    assert buf.getvalue() == printed
    assert sandbox.with_echo("def f(:\n") == "def f(:\n"


def test_from_fusion_maps_statuses():
    ok = {"status": "Success", "message": "", "compile_result": None, "run_result": {
        "status": "Finished", "execution_time": 0.05, "return_code": 0, "stdout": "hello\n", "stderr": ""}, "files": {}}
    assert sandbox.from_fusion(ok) == ExecResult("ok", "hello\n", "", 0.05)
    tle = {"status": "Failed", "run_result": {"status": "TimeLimitExceeded", "execution_time": 1.0, "return_code": None,
                                              "stdout": "", "stderr": ""}}
    assert sandbox.from_fusion(tle).status == "timeout"
    mem = {"status": "Failed", "run_result": {"status": "Finished", "return_code": 1, "stdout": "",
                                              "stderr": "Traceback (most recent call last):\nMemoryError\n"}}
    assert sandbox.from_fusion(mem).status == "memory"
    assert sandbox.from_fusion({"status": "SandboxError", "message": "boom"}).status == "killed"


# -----------------------------------------------------------------------------
# Ordinary code


def test_last_expression_is_echoed_like_a_repl():
    r = run_code("x = 2**100\nx")
    assert (r.status, r.stdout, r.stderr) == ("ok", f"{2**100}\n", "")
    r = run_code("print('a')\n'b'")
    assert (r.status, r.stdout) == ("ok", "a\n'b'\n")
    assert run_code("import math\nmath.sqrt(16) if False else None").stdout == ""  # None is not echoed
    assert run_code("x = 5").stdout == ""


def test_traceback_in_stderr_shows_only_the_code():
    r = run_code("def f(x):\n    return 1 / x\nprint('before')\nf(0)")
    assert r.status == "error" and r.stdout == "before\n"
    assert "ZeroDivisionError: division by zero" in r.stderr and 'File "<code>", line 2, in f' in r.stderr
    assert "return 1 / x" in r.stderr and "sandbox.py" not in r.stderr
    r = run_code("def f(:\n  pass")
    assert r.status == "error" and "SyntaxError" in r.stderr


def test_exit_codes_stdin_and_imports():
    assert run_code("import sys; sys.exit(0)").status == "ok"
    assert run_code("import sys; sys.exit(3)").status == "error"
    assert run_code("import sys; print(sys.stdin.read().upper())", stdin="abc\n").stdout == "ABC\n\n"
    # a preloaded module, one imported lazily from the interpreter's root-only prefix, and a C extension
    r = run_code("import sympy, xml.dom.minidom, sqlite3\nsympy.factorint(2**64 + 1)")
    assert r.status == "ok" and r.stdout == "{274177: 1, 67280421310721: 1}\n"


def test_code_naming_sympy_goes_to_the_server_that_preloaded_it():
    loaded = "import sys\nprint(sorted(m for m in ('numpy', 'sy' + 'mpy') if m in sys.modules))"  # names no module
    assert run_code(loaded).stdout == "['numpy']\n"  # the lean server: numpy only, so its forks are half the size
    assert run_code(loaded + "  # sympy").stdout == "['numpy', 'sympy']\n"
    assert run_code("from mpmath import mp\nmp.dps").stdout == "15\n"
    assert sandbox._HEAVY_POOL.proc.poll() is None and sandbox._HEAVY_POOL.proc.pid != sandbox._POOL.proc.pid


def test_no_state_leaks_between_calls():
    assert run_code("x = 41\nimport math\nmath.pi = 3").status == "ok"
    assert "NameError" in run_code("x").stderr
    assert run_code("import math\nmath.pi").stdout == "3.141592653589793\n"
    assert run_code("open('f.txt', 'w').write('hi')\nopen('f.txt').read()").stdout == "'hi'\n"  # scratch cwd works
    assert run_code("import os\nos.path.exists('f.txt')").stdout == "False\n"


def test_big_output_is_truncated_with_marker():
    r = run_code("print('a' * 100_000 + 'END')", max_chars=1000)
    assert r.status == "ok" and r.stdout.startswith("a" * 500) and r.stdout.endswith("aEND\n")
    assert "[99004 characters truncated]" in r.stdout  # 100_004 printed chars, 1000 kept


def test_concurrent_calls_run_in_parallel():
    results = [None] * 6

    def call(i):
        results[i] = run_code(f"import time\ntime.sleep(0.5)\n{i} * 10")
    t0 = time.monotonic()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r.stdout for r in results] == [f"{i * 10}\n" for i in range(6)]
    assert time.monotonic() - t0 < 2.0  # 3 s if they ran one after another


# -----------------------------------------------------------------------------
# Hostile code


def test_calls_from_a_process_with_many_open_files():
    # a rollout runs hundreds of tool calls at once: their descriptors pass 1024, where select() fails
    import resource
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1400:
        pytest.skip("needs a soft RLIMIT_NOFILE of 1400")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: run_code(f"print({i} * 2)"), range(16)))
        assert [r.stdout for r in results] == [f"{2 * i}\n" for i in range(16)], results[0]
    finally:
        for fd in held:
            os.close(fd)


def test_infinite_loop_times_out():
    r = run_code("print('started')\nwhile True:\n    pass", timeout=1.0)
    assert r.status == "timeout" and r.stdout == "started\n" and 0.9 < r.elapsed_s < 2.0


def test_memory_bomb():
    assert run_code("x = bytearray(8 << 30)", memory_mb=512).status == "memory"
    r = run_code("a = []\nwhile True:\n    a.append(bytearray(1 << 20))", memory_mb=512, timeout=10)
    assert r.status == "memory" and "MemoryError" in r.stderr and r.elapsed_s < 5


def test_limits_are_set():
    r = run_code("import resource as r\nprint(r.getrlimit(r.RLIMIT_AS)[0], r.getrlimit(r.RLIMIT_NPROC)[0])",
                 memory_mb=700)
    assert r.stdout == f"{700 * 1024 * 1024} {sandbox.NPROC}\n"
    r = run_code("open('big', 'wb').write(b'0' * (32 << 20))")
    assert r.status == "error" and "File too large" in r.stderr


@needs_isolation
def test_fork_bomb_is_contained():
    r = run_code("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=1.0)
    assert r.status == "timeout" and r.elapsed_s < 2.5
    assert wait_until(only_warm_left)
    assert run_code("1 + 1").stdout == "2\n"


def test_output_flood_is_cut_short():
    r = run_code("while True:\n    print('x' * 1000)", timeout=20)
    assert r.status == "killed" and r.elapsed_s < 5
    assert len(r.stdout) < sandbox.MAX_CHARS + 100 and "characters truncated" in r.stdout


def test_env_secret_is_not_visible(monkeypatch):
    monkeypatch.setenv("SOD_TEST_SECRET", "hunter2")
    sandbox._POOL.close()  # the next call starts a server from this environment
    r = run_code("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())")
    assert r.status == "ok" and "hunter2" not in r.stdout and "SOD_TEST_SECRET" not in r.stdout


@needs_isolation
def test_no_network_even_to_local_listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    r = run_code(f"import socket\nprint(socket.if_nameindex())\nsocket.create_connection(('127.0.0.1', {port}), 2)")
    assert r.status == "error" and r.stdout == "[(1, 'lo')]\n" and "OSError" in r.stderr
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


@needs_isolation
def test_no_writes_outside_scratch():
    name = f"sandbox_probe_{uuid.uuid4().hex}"
    # the checkout (and its outputs), $HOME, the interpreter: refused, read-only or hidden
    for d in (ROOT, os.path.join(ROOT, "tests"), os.path.expanduser("~"), os.path.dirname(os.__file__)):
        target = os.path.join(d, name)
        r = run_code(f"open({target!r}, 'w').write('x')")
        assert r.status == "error" and any(w in r.stderr for w in ("Read-only", "Permission", "No such file")), r
        assert not os.path.exists(target)
    assert run_code("import os\nos.getuid() == 0").stdout == "False\n"
    for d in ("/tmp", "/dev/shm"):  # the call's own tmpfs, not the host's: gone with the call
        assert run_code(f"open('{d}/{name}', 'w').write('x')\nopen('{d}/{name}').read()").stdout == "'x'\n"
        assert not os.path.exists(f"{d}/{name}")
        assert run_code(f"import os\nos.path.exists('{d}/{name}')").stdout == "False\n"
    r = run_code("import os\n[n for n in os.listdir('/run') if n != '.sandbox'], [p for p in os.listdir('/proc') if "
                 "p.isdigit()]")
    assert r.stdout == "([], ['1'])\n"  # no host sockets under /run (only the parked interpreter); no other process


@needs_isolation
def test_detached_children_die_with_the_call():
    tag = f"{time.time():.6f}"
    code = ("import os, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{tag}'],\n"
            "                 start_new_session=True)\n"
            "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "time.sleep(0.3)\nprint('parent done')")
    r = run_code(code, timeout=5)
    assert r.status == "ok" and r.stdout == "parent done\n" and r.elapsed_s < 2, r

    def tagged():
        return [p for p in os.listdir("/proc") if p.isdigit() and tag in _cmdline(p)]
    assert wait_until(lambda: not tagged()) and wait_until(only_warm_left)


def _cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


@needs_isolation
def test_cannot_kill_caller_or_pool():
    server = sandbox._POOL.proc.pid
    r = run_code("import os, signal\nout = []\n"
                 f"for pid in ({os.getpid()}, {server}):\n"
                 "    try:\n        os.kill(pid, signal.SIGKILL); out.append('sent')\n"
                 "    except OSError as e:\n        out.append(type(e).__name__)\nout")
    assert r.stdout == "['ProcessLookupError', 'ProcessLookupError']\n"  # neither is even visible
    for target in (0, -1):  # its own process group; every process it may signal
        r = run_code(f"import os, signal, subprocess\nsubprocess.Popen(['sleep', '5'])\nos.kill({target}, 9)")
        assert r.status in ("ok", "killed"), r
    assert sandbox._POOL.proc.pid == server and sandbox._POOL.proc.poll() is None
    assert run_code("1 + 1").stdout == "2\n"
    r = run_code("import ctypes\nctypes.string_at(0)")  # a fault kills the code, even as init of its namespace
    assert r.status == "killed" and "signal 11" in r.stderr


def test_pool_recovers_after_server_dies():
    os.kill(sandbox._POOL.proc.pid, signal.SIGKILL)
    sandbox._POOL.proc.wait()
    assert run_code("6 * 7").stdout == "42\n"


def test_hundred_timeouts_leave_nothing_behind():
    tmp = tempfile.gettempdir()
    before = sorted(n for n in os.listdir(tmp) if n.startswith("sandbox-"))
    for _ in range(100):
        r = run_code("while True:\n    pass", timeout=0.05)
        assert r.status == "timeout"
    assert wait_until(only_warm_left)  # every sandbox exited and was reaped
    assert not [p for p in descendants(os.getpid()) if p[3] == "Z"]  # no zombies
    assert sorted(n for n in os.listdir(tmp) if n.startswith("sandbox-")) == before


def test_fallback_where_the_kernel_refuses_namespaces():
    """A kernel that refuses user namespaces (simulated: unshare fails with EPERM): one line says what is not
    isolated and how to enable it, and calls still run with what remains (limits, scratch cwd, scrubbed env)."""
    sock_dir = tempfile.mkdtemp(prefix="sandbox-")
    server = ("import errno, sandbox\n"
              "def refuse(flags):\n    raise OSError(errno.EPERM, 'unshare: Operation not permitted')\n"
              f"sandbox._unshare = refuse\nsandbox.fork_server({sock_dir!r})")
    proc = subprocess.Popen([sys.executable, "-c", server], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(sandbox.SANDBOX_ENV, PYTHONPATH=ROOT, SOD_SECRET="x"))
    pool = sandbox.Pool()
    pool.proc, pool.dir = proc, sock_dir
    try:
        assert proc.stdout.readline() == b"ready fallback\n"

        def run(code, timeout=5.0):
            return pool.run(dict(code=code, timeout=timeout, memory_mb=512, stdin="", echo=True, max_chars=4096))
        assert run("x = 6 * 7\nx").stdout == "42\n"
        r = run("import os\nos.getcwd(), 'SOD_SECRET' in os.environ")
        assert r.stdout.startswith(f"('{tempfile.gettempdir()}/sandbox-run-") and r.stdout.endswith("False)\n")
        assert run("while True:\n    pass", timeout=0.5).status == "timeout"
        assert run("x = bytearray(8 << 30)").status == "memory"
        assert run("print('a' * 1000)\nimport os\nos.kill(os.getpid(), 9)").status == "killed"
    finally:
        pool.close()
    lines = proc.communicate(timeout=30)[1].decode().splitlines()  # EOF: no sandbox outlived the server
    assert len(lines) == 1 and "Operation not permitted" in lines[0] and "NOT isolated from the network" in lines[0]
    assert "max_user_namespaces" in lines[0]


def test_suite_passes_as_an_unprivileged_uid(tmp_path):
    """This file again as uid 65534, as a user who is not root runs it: on a world-readable copy of the files it
    needs, in a mount namespace where the interpreter is reachable (it may live under a directory like /root)."""
    if os.geteuid() != 0:
        pytest.skip("not root: this whole suite already runs unprivileged")
    for tool in ("setpriv", "unshare", "mount"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} (util-linux) is not installed")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*drop, "unshare", "-U", "-r", "-m", "-n", "-p", "-f", "true"]).returncode != 0:
        pytest.skip("the kernel refuses user namespaces to unprivileged users")
    copy = tempfile.mkdtemp(prefix="sandbox-copy-")
    try:
        os.makedirs(f"{copy}/tests")
        for f in ("sandbox.py", "tests/conftest.py", "tests/test_sandbox.py"):
            shutil.copy(os.path.join(ROOT, f), f"{copy}/{f}")
        for d in (copy, f"{copy}/tests"):
            os.chmod(d, 0o755)
        argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"{copy}/tests/test_sandbox.py",
                "-k", "not unprivileged"]
        out = subprocess.run(sandbox.as_unprivileged(argv, copy), cwd=copy, capture_output=True, text=True,
                             timeout=300)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    assert out.returncode == 0 and "skipped" not in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


# -----------------------------------------------------------------------------
# SandboxFusion-compatible server and client


@pytest.fixture(scope="module")
def server_url():
    server = sandbox.make_server(sandbox.Config(port=0, max_body_bytes=10_000))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_server_speaks_sandboxfusion_json(server_url):
    resp = requests.post(server_url + "/run_code", json={
        "code": "print('hello')\n1 + 1", "language": "python", "compile_timeout": 10, "run_timeout": 5,
        "memory_limit_MB": -1, "stdin": "", "files": {}, "fetch_files": []}).json()
    assert resp["status"] == "Success" and resp["compile_result"] is None and resp["files"] == {}
    run = resp["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0 and run["stdout"] == "hello\n"  # no echo: a script
    assert run["stderr"] == "" and isinstance(run["execution_time"], float)
    resp = requests.post(server_url + "/run_code", json={"code": "while True: pass", "language": "python",
                                                         "run_timeout": 0.5}).json()
    assert resp["status"] == "Failed" and resp["run_result"]["status"] == "TimeLimitExceeded"
    assert requests.post(server_url + "/run_code", json={"code": "x" * 20_000, "language": "python"}).status_code == 413
    bad = requests.post(server_url + "/run_code", json={"code": "1", "language": "cpp"})
    assert bad.status_code == 400 and bad.json()["status"] == "SandboxError"
    assert requests.post(server_url + "/run_code", data=b"{not json").status_code == 400
    assert requests.post(server_url + "/nope", json={}).status_code == 404


def test_client_against_server(server_url):
    execute = sandbox.make_executor(server_url)
    r = execute("x = 6 * 7\nx", 5.0)  # the client adds the echo the server does not do
    assert (r.status, r.stdout) == ("ok", "42\n")
    r = execute("print('a')\nx = 6 * 7\nx", 5.0, echo=False)  # exactly as given: the bare `x` prints nothing
    assert (r.status, r.stdout) == ("ok", "a\n")
    r = execute("import math\nmath.factorial(-1)", 5.0)
    assert r.status == "error" and "ValueError" in r.stderr
    assert execute("while True: pass", 0.5).status == "timeout"
    assert execute("bytearray(1 << 40)", 5.0).status == "memory"


def test_executor_failures_are_results():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    r = sandbox.make_executor(f"http://127.0.0.1:{port}")("1", 1.0)
    assert r.status == "killed" and "failed" in r.stderr
    assert sandbox.make_executor(None)("1 + 1", 5.0).stdout == "2\n"
    assert sandbox.make_executor("local")("1 + 2", 5.0).stdout == "3\n"
    r = sandbox.make_executor(None)("print('a')\n1 + 2", 5.0, echo=False)
    assert (r.status, r.stdout) == ("ok", "a\n")
    with pytest.raises(ValueError):
        sandbox.make_executor("sandbox.example:8080")
