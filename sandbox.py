"""sandbox.py: run model-written Python in a fresh, isolated, disposable process per call, forked from a warm server.

    run_code("x = 2**100\\nx")  # ExecResult(status='ok', stdout='1267650600228229401496703205376\\n', stderr='', ...)
    make_executor(None)  # execute(code, timeout, echo): our pool; make_executor("http://h:8080"): SandboxFusion
    python sandbox.py --serve --port 8080   # SandboxFusion-compatible POST /run_code, bound to 127.0.0.1

A script; a trailing bare expression is echoed (REPL-style); an exception is its traceback in stderr; each stream is
cut to `max_chars` around a marker. status: ok | error | timeout | memory | killed (signal, output flood, fault).
Every failure is an ExecResult. The first call starts a fork server (this file, no torch, numpy and sympy
pre-imported); per call it forks a supervisor that unshares PID, network, mount and IPC namespaces and forks the
namespace's init, which sets up the filesystem view and forks the process that runs the code.

Isolated on Linux >= 5.3 as root with CAP_SYS_ADMIN (a probe checks at start): network (an empty namespace per
call: nothing reachable, host loopback included); processes (a PID namespace per call: when the code's process ends
or time is up the kernel kills all that is left, setsid daemons too; the code sees only its own processes and runs
as a per-call uid, so it cannot signal the caller, the pool or another call); files (every mount read-only, fresh
tmpfs at /tmp = cwd = HOME and /dev/shm that vanish with the call; a root-only directory holding the interpreter,
e.g. /root, is covered by an empty tmpfs with the interpreter's directories bound back read-only so imports work);
environment (SANDBOX_ENV only); limits (CPU, wall time, address space, 64 processes, 16 MiB per file, output).
Not isolated: the kernel (no seccomp), reading world-readable host files, CPU/memory bandwidth (no cgroups).
Without namespaces (not root, or no CAP_SYS_ADMIN as under Docker's default profile) the pool prints one line and
runs the code in a process group with rlimits and a temp cwd: the network is open, setsid daemons can outlive the
call, and a non-root caller's own files and processes are exposed (as root the code still gets a per-call uid).
"""
import argparse
import ast
import atexit
import builtins
import ctypes
import gc
import importlib
import json
import linecache
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_CHARS = 4096  # per stream, what the model sees
HARD_OUTPUT_BYTES = 4 << 20  # more output is a flood: kill now rather than at the timeout
PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "heapq", "bisect",
           "random", "re", "string", "statistics", "json", "datetime", "numpy", "sympy")  # imported once, shared
UID_BASE = 200000  # code runs as UID_BASE + supervisor pid: unique among live calls
NPROC, FSIZE_MB, NOFILE, SCRATCH_MB = 64, 16, 256, 64
MEMORY_EXIT = 99  # exit code of the code's process after a MemoryError
SCRIPT = "<code>"  # file name in tracebacks
SANDBOX_ENV = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp",
               "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
NEW_NS = 0x20000 | 0x8000000 | 0x20000000 | 0x40000000  # CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


@dataclass
class ExecResult:
    status: str  # ok | error | timeout | memory | killed
    stdout: str
    stderr: str
    elapsed_s: float


def truncate(text, max_chars=MAX_CHARS):
    """Keep the head and the tail (where a traceback ends) of an over-long output, with a marker of how much went."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n...[{len(text) - 2 * half} characters truncated]...\n{text[len(text) - half:]}"


def compile_script(code, echo=True):
    """Compile `code` as a script; with `echo`, a trailing bare expression is split off to be evaluated and printed."""
    tree, last = ast.parse(code, SCRIPT), None
    if echo and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), SCRIPT, "eval")
    return compile(tree, SCRIPT, "exec"), last


def with_echo(code):
    """`code` with its trailing bare expression rewritten to print its repr, for servers that run plain scripts."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # the server reports it
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return code
    e, raw, starts = tree.body[-1].value, code.encode(), [0]  # ast columns count utf-8 bytes
    for line in raw.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    a, b = starts[e.lineno - 1] + e.col_offset, starts[e.end_lineno - 1] + e.end_col_offset
    return (raw[:a] + b"print(repr(_v)) if (_v := (" + raw[a:b] + b")) is not None else None" + raw[b:]).decode()


def _recv_all(sock):
    return b"".join(iter(lambda: sock.recv(1 << 16), b""))


# -----------------------------------------------------------------------------
# Inside the sandbox

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(ret, what):
    if ret != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(src, dst, fstype=None, flags=0, data=None):
    enc = lambda s: None if s is None else s.encode()
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def _hidden_python_dirs():
    """(root-only ancestor, dir) for each interpreter dir an unprivileged uid cannot reach (e.g. under /root)."""
    dirs, out = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *sys.path) if os.path.isdir(p)}), []
    for d in dirs:  # sorted: a parent comes first and covers its children
        parts = d.split(os.sep)
        tops = [os.sep.join(parts[:i]) for i in range(2, len(parts))]
        top = next((t for t in tops if not os.stat(t).st_mode & 0o001), None)
        if top and not any(d == o or d.startswith(o + os.sep) for _, o in out):
            out.append((top, d))
    return out


def _private_fs(hidden):
    """In the call's mount namespace: all read-only but fresh tmpfs at /tmp and /dev/shm, the interpreter, own /proc."""
    for line in open("/proc/self/mountinfo").read().splitlines():
        try:
            _mount(None, line.split()[4].replace("\\040", " "), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        except OSError:
            pass  # a mount the kernel will not remount (hidden under another, or special)
    for path in ("/tmp", "/dev/shm"):
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={SCRATCH_MB}m,mode=1777")
    for i, (_, d) in enumerate(hidden):  # park the interpreter's dirs, cover the root-only ancestor, bind them back
        os.mkdir(f"/tmp/.py{i}")
        _mount(d, f"/tmp/.py{i}", None, MS_BIND | MS_REC)
    for top in dict.fromkeys(t for t, _ in hidden):
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for i, (_, d) in enumerate(hidden):
        os.makedirs(d, exist_ok=True)
        _mount(f"/tmp/.py{i}", d, None, MS_BIND | MS_REC)
        _mount(None, d, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        _check(_libc.umount2(f"/tmp/.py{i}".encode(), 2), "umount")  # 2 = MNT_DETACH
        os.rmdir(f"/tmp/.py{i}")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)  # lists only this namespace's processes


def _run_script(code, echo):
    """Execute `code` as __main__; returns the exit code. Tracebacks show only the code's own frames and lines."""
    linecache.cache[SCRIPT] = (len(code), None, code.splitlines(True), SCRIPT)
    g, sys.argv = {"__name__": "__main__", "__builtins__": builtins}, [SCRIPT]
    try:
        body, last = compile_script(code, echo)
        exec(body, g)
        if last is not None and (value := eval(last, g)) is not None:
            print(repr(value))
        return 0
    except SystemExit as e:  # as the interpreter does: None -> 0, int -> itself, anything else printed -> 1
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != SCRIPT:
            tb = tb.tb_next
        sys.stderr.write("".join(traceback.format_exception(type(e), e, tb)))
        return MEMORY_EXIT if isinstance(e, MemoryError) else 1


def _child(req, fds, isolate, hidden, uid, scratch):
    """Become the sandbox (stdio, filesystem view, uid, env, limits), run the code, exit; never returns."""
    rc = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)  # the client connection and the server socket stay out of reach
        if isolate:
            _private_fs(hidden)
            os.chdir("/tmp")
            if runner := os.fork():  # we are PID 1: when we exit, the kernel kills all that is left in the namespace
                code = os.waitstatus_to_exitcode(os.waitpid(runner, 0)[1])
                os._exit(code if code >= 0 else 128 - code)
        else:
            os.setsid()
            os.chdir(scratch)
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            _libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid change made /proc/self root-owned; give it back
        os.environ.clear()
        os.environ.update(SANDBOX_ENV)
        secs = int(req["timeout"]) + 1
        for res, lim in ((resource.RLIMIT_CPU, secs), (resource.RLIMIT_NPROC, NPROC), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_FSIZE, FSIZE_MB << 20), (resource.RLIMIT_NOFILE, NOFILE),
                         (resource.RLIMIT_AS, req["memory_mb"] << 20)):
            resource.setrlimit(res, (lim, lim + (res == resource.RLIMIT_CPU)))  # CPU: SIGXCPU first, then SIGKILL
        sys.stdout.reconfigure(line_buffering=True)  # what was printed before a timeout still comes back
        rc = _run_script(req["code"], req["echo"])
    except BaseException as e:
        os.write(2, f"sandbox setup failed: {e!r}\n".encode())
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):  # the code may have swapped them
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(rc)


# -----------------------------------------------------------------------------
# The supervisor: one per call, forked by the fork server

def _kill_all(pid, isolate):
    """Kill the call's processes: init of its PID namespace takes everything with it; else its process group."""
    try:
        os.kill(pid, signal.SIGKILL) if isolate else os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _execute(req, isolate, hidden):
    """Run one request in a fresh sandbox; returns the ExecResult fields as a dict."""
    uid, scratch, stdin = UID_BASE + os.getpid(), None, os.memfd_create("stdin")
    os.write(stdin, req["stdin"].encode())
    os.lseek(stdin, 0, os.SEEK_SET)
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    if isolate:
        _check(_libc.unshare(NEW_NS), "unshare")
        _mount("none", "/", None, MS_REC | MS_PRIVATE)  # no mount made for this call propagates to the host
    else:
        scratch = tempfile.mkdtemp(prefix="sandbox-run-")
        if os.getuid() == 0:
            os.chown(scratch, uid, uid)
    t0 = time.monotonic()
    if (pid := os.fork()) == 0:
        _child(req, (stdin, out_w, err_w), isolate, hidden, uid, scratch)
    for fd in (stdin, out_w, err_w):
        os.close(fd)
    pidfd, out, why, ended = os.pidfd_open(pid), {out_r: bytearray(), err_r: bytearray()}, None, None
    wait, deadline = [out_r, err_r, pidfd], t0 + req["timeout"]
    while wait:
        left = deadline - time.monotonic()
        ready = select.select(wait, [], [], left)[0] if left > 0 else []
        if not ready and ended:
            break  # ended or killed, yet something still holds a pipe (fallback mode only): stop reading
        if not ready or (len(out[out_r]) + len(out[err_r]) > HARD_OUTPUT_BYTES and not why):
            why, ended, deadline = "timeout" if not ready else "flood", time.monotonic(), time.monotonic() + 1.0
            _kill_all(pid, isolate)
        for fd in ready:
            if fd == pidfd:
                wait.remove(fd)
                ended, deadline = ended or time.monotonic(), min(deadline, time.monotonic() + 1.0)
                if not isolate:  # the rest of its process group goes with it
                    _kill_all(pid, isolate)
            elif chunk := os.read(fd, 1 << 16):
                out[fd] += chunk
            else:
                wait.remove(fd)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if why == "timeout" or sig == signal.SIGXCPU:
        status, note = "timeout", f"time limit of {req['timeout']:g} s exceeded"
    elif why or sig:
        status, note = "killed", f"output over {HARD_OUTPUT_BYTES} bytes" if why else f"killed by signal {sig}"
    else:
        status, note = "ok" if code == 0 else "memory" if code == MEMORY_EXIT else "error", ""
    stdout, stderr = (truncate(out[fd].decode(errors="replace"), req["max_chars"]) for fd in (out_r, err_r))
    return dict(status=status, stdout=stdout, stderr=stderr + (f"[sandbox: {note}]\n" if note else ""),
                elapsed_s=round((ended or time.monotonic()) - t0, 6))


def _supervise(conn, isolate, hidden):
    """In a fresh fork of the server: read one request from `conn`, run it, send the result back, exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        res = _execute(json.loads(_recv_all(conn)), isolate, hidden)
    except Exception as e:
        res = dict(status="killed", stdout="", stderr=f"sandbox: supervisor failed: {e!r}\n", elapsed_s=0.0)
    conn.sendall(json.dumps(res).encode())
    os._exit(0)


def _probe(hidden):
    """Run one snippet fully isolated in a throwaway supervisor; returns why isolation is unavailable, or None."""
    if os.geteuid() != 0:
        return "not running as root"
    ours, theirs = socket.socketpair()
    if (pid := os.fork()) == 0:
        _supervise(theirs, True, hidden)
    theirs.close()
    ours.sendall(json.dumps(dict(code="import os; os.getuid()", timeout=10.0, memory_mb=1024, stdin="", echo=True,
                                 max_chars=MAX_CHARS)).encode())
    ours.shutdown(socket.SHUT_WR)
    res = json.loads(_recv_all(ours))
    os.waitpid(pid, 0)
    ok = res["status"] == "ok" and res["stdout"].strip() not in ("", "0")  # ran, and not as root
    return None if ok else (res["stderr"] or "probe failed").strip().splitlines()[-1]


def fork_server(sock_dir):
    """Pre-import, probe the kernel, then fork one supervisor per connection until the client process goes away."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    hidden = _hidden_python_dirs()
    gc.freeze()  # the preloaded objects are never scanned in the children, so their pages stay shared
    if why := _probe(hidden):
        exposed = "the network" + ("" if os.geteuid() == 0 else ", this user's files and processes")
        print(f"sandbox: no namespaces ({why}); falling back to rlimits and a process group: NOT isolated from "
              f"{exposed}", file=sys.stderr, flush=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(os.path.join(sock_dir, "socket"))
    srv.listen(1024)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished supervisors
    print("ready", "fallback" if why else "isolated", flush=True)
    while True:
        if 0 in select.select([srv, 0], [], [])[0] and not os.read(0, 1):
            return  # stdin closed: the client process is gone
        conn = srv.accept()[0]
        if os.fork() == 0:
            srv.close()
            _supervise(conn, not why, hidden)
        conn.close()


# -----------------------------------------------------------------------------
# The caller's side

class Pool:
    """Client of the fork server: started on first use, restarted when it has died; safe to use from many threads."""

    def __init__(self):
        self.lock, self.proc, self.dir, self.isolated = threading.Lock(), None, None, False

    def socket_path(self):
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.close()
                self.dir = tempfile.mkdtemp(prefix="sandbox-")  # mode 0700: only this user reaches the socket
                self.proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), "--fork-server",
                                              self.dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=SANDBOX_ENV)
                ready = self.proc.stdout.readline().split()
                if ready[:1] != [b"ready"]:
                    raise RuntimeError("the sandbox fork server did not start")
                self.isolated = ready[1:] == [b"isolated"]
            return os.path.join(self.dir, "socket")

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = self.dir = None

    def run(self, req):
        for attempt in range(2):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(req["timeout"] + 30)
                    s.connect(self.socket_path())
                    s.sendall(json.dumps(req).encode())
                    s.shutdown(socket.SHUT_WR)
                    return ExecResult(**json.loads(_recv_all(s)))
            except (ConnectionRefusedError, FileNotFoundError):  # the server died: the next try restarts it
                if attempt == 1:
                    raise


_POOL = Pool()
atexit.register(_POOL.close)


def run_code(code, timeout=10.0, memory_mb=2048, *, stdin="", max_chars=MAX_CHARS, echo=True):
    """Run `code` in a fresh sandbox; thread-safe; never raises."""
    req = dict(code=code, timeout=float(timeout), memory_mb=int(memory_mb), stdin=stdin, echo=echo, max_chars=max_chars)
    try:
        return _POOL.run(req)
    except Exception as e:
        return ExecResult("killed", "", f"sandbox failure: {e!r}", 0.0)


def to_fusion(r):
    """ExecResult -> SandboxFusion's /run_code response."""
    run = dict(status="TimeLimitExceeded" if r.status == "timeout" else "Finished", execution_time=r.elapsed_s,
               return_code={"ok": 0, "killed": -9, "timeout": None}.get(r.status, 1), stdout=r.stdout, stderr=r.stderr)
    return dict(status="Success" if r.status == "ok" else "Failed", message="", compile_result=None, run_result=run,
                executor_pod_name=None, files={})


def from_fusion(resp, max_chars=MAX_CHARS):
    """SandboxFusion's /run_code response -> ExecResult."""
    run = resp.get("run_result") or {}
    out, err = truncate(run.get("stdout") or "", max_chars), truncate(run.get("stderr") or "", max_chars)
    t = float(run.get("execution_time") or 0.0)
    if resp.get("status") == "SandboxError" or not run:
        return ExecResult("killed", out, err + f"sandbox error: {resp.get('message', '')}", t)
    if resp.get("status") == "Success":
        return ExecResult("ok", out, err, t)
    if run.get("status") == "TimeLimitExceeded":
        return ExecResult("timeout", out, err, t)
    if err.rstrip().rsplit("\n", 1)[-1].startswith("MemoryError"):
        return ExecResult("memory", out, err, t)
    return ExecResult("killed" if (run.get("return_code") or 0) < 0 else "error", out, err, t)


def make_executor(url=None, memory_mb=2048):
    """execute(code, timeout=10.0, echo=True) -> ExecResult: our pool for None / "local", else the SandboxFusion server
    at `url`. echo=False runs the code exactly as given (no echo of a trailing bare expression)."""
    if url in (None, "", "local"):
        return lambda code, timeout=10.0, echo=True: run_code(code, timeout, memory_mb, echo=echo)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"sandbox: expected None, 'local' or an http(s):// SandboxFusion URL, got {url!r}")
    import requests
    endpoint = url.rstrip("/") + "/run_code"

    def execute(code, timeout=10.0, echo=True):
        body = dict(code=with_echo(code) if echo else code, language="python", run_timeout=timeout,
                    memory_limit_MB=memory_mb)
        try:
            resp = requests.post(endpoint, json=body, timeout=timeout + 30)
            if resp.status_code != 200:
                return ExecResult("killed", "", f"sandbox: HTTP {resp.status_code}: {resp.text[:200]}", 0.0)
            return from_fusion(resp.json())
        except Exception as e:
            return ExecResult("killed", "", f"sandbox: request to {endpoint} failed: {e!r}", 0.0)
    return execute


# -----------------------------------------------------------------------------
# SandboxFusion-compatible HTTP server

@dataclass
class Config:
    host: str = "127.0.0.1"  # bind address; anything wider hands code execution to the network
    port: int = 8080  # TCP port (0: any free port)
    max_body_bytes: int = 1 << 20  # larger requests are refused with 413
    max_timeout: float = 60.0  # run_timeout is capped to this many seconds


class _Handler(BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        cfg, error = self.server.cfg, lambda code, msg: self.reply(code, dict(status="SandboxError", message=msg))
        if self.path.rstrip("/") != "/run_code":
            return error(404, f"no such path {self.path}; this server has POST /run_code")
        size = int(self.headers.get("Content-Length") or -1)
        if not 0 <= size <= cfg.max_body_bytes:
            self.close_connection = True  # the body is left unread
            return error(413, f"the body needs a Content-Length of at most {cfg.max_body_bytes} bytes")
        try:
            req = json.loads(self.rfile.read(size))
            code, stdin, memory_mb = req["code"], req.get("stdin") or "", int(req.get("memory_limit_MB") or -1)
            timeout = min(float(req.get("run_timeout") or 10.0), cfg.max_timeout)
            assert isinstance(code, str) and isinstance(stdin, str), "code and stdin must be strings"
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            return error(400, f"bad request: {e!r}")
        if req.get("language", "python") not in ("python", "python3"):
            return error(400, f"language {req.get('language')!r} is not supported; only python")
        self.reply(200, to_fusion(run_code(code, timeout, memory_mb if memory_mb > 0 else 2048, stdin=stdin,
                                           echo=False)))  # a plain script, as SandboxFusion runs it

    def log_message(self, *args):
        pass  # a line per request would drown the training log


def make_server(cfg):
    server = ThreadingHTTPServer((cfg.host, cfg.port), _Handler)
    server.daemon_threads, server.cfg = True, cfg
    return server


def main():
    p = argparse.ArgumentParser(description="SandboxFusion-compatible POST /run_code over the local sandbox pool")
    p.add_argument("--serve", action="store_true", required=True)
    for f in fields(Config):
        p.add_argument(f"--{f.name}", type=f.type, default=f.default)
    args = vars(p.parse_args())
    cfg = Config(**{f.name: args[f.name] for f in fields(Config)})
    server = make_server(cfg)
    print(f"sandbox: {cfg}; POST http://{cfg.host}:{server.server_address[1]}/run_code", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    fork_server(sys.argv[2]) if sys.argv[1:2] == ["--fork-server"] else main()
