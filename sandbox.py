"""sandbox.py: run model-written Python in a fresh, isolated, disposable process per call, forked from a warm server.

    run_code("x = 2**100\\nx")  # ExecResult(status='ok', stdout='1267650600228229401496703205376\\n', stderr='', ...)
    make_executor(None)  # execute(code, timeout, echo): our pool; make_executor("http://h:8080"): SandboxFusion
    python sandbox.py --serve --port 8080   # SandboxFusion-compatible POST /run_code, bound to 127.0.0.1

A script; a trailing bare expression is echoed (REPL-style); an exception is its traceback in stderr; each stream is
cut to `max_chars` around a marker; every failure is an ExecResult. A fork server (this file, no torch) keeps WARM
sandboxes waiting in their own namespaces, one per call. What is isolated, the fallback, and why: docs/sandbox.md.
"""
import argparse
import ast
import atexit
import builtins
import contextlib
import ctypes
import gc
import itertools
import json
import linecache
import os
import re
import resource
import select
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_CHARS, HARD_OUTPUT_BYTES = 4096, 4 << 20  # per stream, what the model sees; more is a flood, killed at once
PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "heapq", "bisect",
           "random", "re", "string", "statistics", "json", "datetime", "numpy")  # imported once, shared
HEAVY = ("sympy", "mpmath")  # in a second server: sympy doubles one (26 -> 61 MB), paid at each call's fork and exit
HEAVY_USE = re.compile(r"\b(?:" + "|".join(HEAVY) + r")\b")
HOST_UID = 200000  # a root caller's sandboxes run as this host uid; the fallback as root: one above it per call
CODE_UID = 1000  # the code's uid inside its own user namespace (not root: no capabilities)
WARM, NPROC, FSIZE_MB, NOFILE, SCRATCH_MB = 4, 64, 16, 256, 64  # WARM: sandboxes forked and waiting for a call
MEMORY_EXIT, SCRIPT = 99, "<code>"  # the code's exit code after a MemoryError; its file name in tracebacks
SANDBOX_ENV = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp",
               "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
NEWNS, NEWUSER, NEWPID, NEWNET, NEWIPC = 0x20000, 0x10000000, 0x20000000, 0x40000000, 0x8000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
MOUNT_OPTS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
              "nodiratime": 2048, "relatime": MS_RELATIME}
HIDDEN_TOPS = ("/tmp/", "/dev/shm/", "/run/")  # covered in every sandbox (/run: the user's and the system's sockets)
PARK = "/run/.sandbox/{}"  # where the interpreter's dirs wait to be bound back


@dataclass
class ExecResult:
    status: str  # ok | error | timeout | memory | killed (signal, output flood, fault)
    stdout: str
    stderr: str
    elapsed_s: float
    raw: tuple = field(default=(), repr=False)  # our pool's (stdout, stderr) bytes as read, before decoding and cut


def truncate(text, max_chars=MAX_CHARS):
    """Keep the head and the tail (where a traceback ends) of an over-long output, with a marker of how much went."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n...[{len(text) - 2 * half} characters truncated]...\n{text[len(text) - half:]}"


def with_echo(code):
    """`code` with its trailing bare expression rewritten to print its repr, for servers that run plain scripts."""
    try:
        e = next(s.value for s in ast.parse(code).body[-1:] if isinstance(s, ast.Expr))
    except (SyntaxError, StopIteration):  # no trailing expression, or a syntax error (the server reports it)
        return code
    raw = code.encode()  # ast columns count utf-8 bytes
    starts = [0, *itertools.accumulate(len(line) for line in raw.splitlines(keepends=True))]
    a, b = starts[e.lineno - 1] + e.col_offset, starts[e.end_lineno - 1] + e.end_col_offset
    return (raw[:a] + b"print(repr(_v)) if (_v := (" + raw[a:b] + b")) is not None else None" + raw[b:]).decode()


# -----------------------------------------------------------------------------
# The server side (the fork server and its sandboxes): namespaces, the sandbox, the server

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(ret, what):
    if ret != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(src, dst, fstype=None, flags=0, data=None):
    enc = lambda s: None if s is None else s.encode()
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def _unshare(flags):
    _check(_libc.unshare(flags), "unshare")


def _map_ids(proc, inner, uid, gid):
    for name, text in (("setgroups", "deny"), ("uid_map", f"{inner} {uid} 1"), ("gid_map", f"{inner} {gid} 1")):
        with open(f"/proc/{proc}/{name}", "w") as f:
            f.write(text)


def _interpreter_dirs():
    """The interpreter's dirs a sandbox would hide: under HIDDEN_TOPS or a dir not all may enter (/root, 0750 home)."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), *sys.path)
            if os.path.isdir(p)}
    out = []
    for d in sorted(dirs):  # a parent comes first and brings its children along
        if (d.startswith(HIDDEN_TOPS) or _closed(d)) and not any(d == o or d.startswith(o + os.sep) for o in out):
            out.append(d)
    return out


def _closed(d):
    """The topmost directory on the way to `d` (itself included) that not everyone may enter, or None."""
    parts = d.split(os.sep)
    return next((t for i in range(2, len(parts) + 1) if not os.stat(t := os.sep.join(parts[:i])).st_mode & 1), None)


def _scratch_dirs(dirs):
    """(park, dir) for the interpreter dirs that each sandbox binds back into its fresh /tmp or /dev/shm."""
    return [(PARK.format(i), d) for i, d in enumerate(dirs) if d.startswith(("/tmp/", "/dev/shm/"))]


def _isolate_server(dirs):
    """Enter new user, mount and PID namespaces (the next child is their init) and build the view all sandboxes share.
    A helper outside writes the id maps: only there may root map another uid (HOST_UID)."""
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (HOST_UID, HOST_UID)
    if os.getuid() == 0:
        os.setgroups([])
    r, w = os.pipe()
    if (helper := os.fork()) == 0:
        ok = os.read(r, 1) == b"1"
        with contextlib.suppress(OSError):
            _map_ids(os.getppid(), 0, uid, gid)
            os._exit(0 if ok else 1)
        os._exit(1)
    try:
        _unshare(NEWUSER | NEWNS | NEWPID)
    finally:
        os.write(w, b"0" if (failed := sys.exc_info()[0] is not None) else b"1")
        if os.waitpid(helper, 0)[1] and not failed:
            raise OSError("writing the user namespace's uid map failed")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # no mount made here propagates to the host
    for line in open("/proc/self/mountinfo").read().splitlines():
        point, opts = line.split()[4].replace("\\040", " "), line.split()[5].split(",")
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | sum(MOUNT_OPTS.get(o, 0) for o in set(opts) - {"ro"})
        flags |= 0 if {"relatime", "noatime"} & set(opts) else MS_STRICTATIME  # a locked atime flag must stay
        try:
            _mount(None, point, None, flags)
        except OSError:
            if not os.statvfs(point).f_flag & os.ST_RDONLY:  # else hidden under another mount, or already ro
                raise
    fds = [os.open(d, os.O_PATH | os.O_DIRECTORY) for d in dirs]  # reachable now, maybe not as the new uid
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)  # from here on files are created as a uid this namespace maps
    covers = ["/run", *dict.fromkeys(t for d in dirs if not d.startswith(HIDDEN_TOPS) and (t := _closed(d)))]
    for top in covers:
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for i, fd in enumerate(fds):  # the descriptors reach the dirs under the covers
        os.makedirs(PARK.format(i))
        _mount(f"/proc/self/fd/{fd}", PARK.format(i), None, MS_BIND | MS_REC)
        os.close(fd)
    for i, d in enumerate(dirs):
        if not d.startswith(("/tmp/", "/dev/shm/")):
            os.makedirs(d, exist_ok=True)
            _mount(PARK.format(i), d, None, MS_BIND | MS_REC)
    for top in covers:
        _mount(None, top, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: a changed uid made /proc/self root-owned; give it back


def _enter_sandbox(scratch_dirs):
    """In a fresh fork, PID 1 of a new PID namespace: new mount, network and IPC namespaces, scratch /tmp, CODE_UID."""
    _unshare(NEWNS | NEWNET | NEWIPC)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # lists only this namespace's processes
    for path in ("/tmp", "/dev/shm"):
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={SCRATCH_MB}m,mode=1777")
    for park, d in scratch_dirs:
        os.makedirs(d, exist_ok=True)
        _mount(park, d, None, MS_BIND | MS_REC)
    _unshare(NEWUSER | NEWNS)  # a user namespace of its own: every mount locked, no capability left
    _map_ids("self", CODE_UID, 0, 0)
    _mount(None, "/proc", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME)
    os.setresgid(CODE_UID, CODE_UID, CODE_UID)
    os.setresuid(CODE_UID, CODE_UID, CODE_UID)


def _run_script(code, echo):
    """Execute `code` as __main__; returns the exit code. Tracebacks show only the code's own frames and lines."""
    linecache.cache[SCRIPT] = (len(code), None, code.splitlines(True), SCRIPT)
    g, sys.argv = {"__name__": "__main__", "__builtins__": builtins}, [SCRIPT]
    try:
        tree, last = ast.parse(code, SCRIPT), None
        if echo and tree.body and isinstance(tree.body[-1], ast.Expr):  # split off to be evaluated and printed
            last = compile(ast.Expression(tree.body.pop().value), SCRIPT, "eval")
        exec(compile(tree, SCRIPT, "exec"), g)
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


def _sandbox(srv, ctrl, view, uid, scratch, server):
    """Enter the namespaces (fallback: a uid), take one call from `srv`, hand it to the server, run it, answer, exit."""
    rc, t0 = 1, time.monotonic()
    try:
        os.setsid()  # own process group, no terminal: kill(0, ...) reaches only this call's processes
        keep = sorted((srv.fileno(), ctrl.fileno()))
        for lo, hi in ((3, keep[0]), (keep[0] + 1, keep[1]), (keep[1] + 1, 1 << 16)):
            os.closerange(lo, hi)  # the server's other sockets and the other calls' pipes stay out of reach
        if view is not None:
            _enter_sandbox(view)
        elif uid:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as in _isolate_server
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG (after the uid change, which clears it): the
        if view is None and os.getppid() != server:  # fallback's sandboxes go with the server too, also when it
            os._exit(1)  # died before the line above
        os.chdir(scratch or "/tmp")
        os.environ.clear()
        os.environ.update(SANDBOX_ENV)
        _run_script("_ = repr([1, 'a'])\nNone", True)  # touch now the pages a call writes (copy-on-write)
        conn, t0 = srv.accept()[0], time.monotonic()
        srv.close()
        fds = socket.recv_fds(conn, 1024, 3)[1]
        req = json.loads(os.pread(fds[0], 1 << 30, 0))
        socket.send_fds(ctrl, [str(req["timeout"]).encode()], [conn.fileno()])  # the server keeps the time
        stdin = os.memfd_create("stdin")
        os.pwrite(stdin, req["stdin"].encode(), 0)  # the offset stays at 0 for the code's reads
        for target, fd in enumerate((stdin, fds[1], fds[2])):
            os.dup2(fd, target)
        for fd in (stdin, *fds):
            os.close(fd)
        for res, lim in ((resource.RLIMIT_CPU, int(req["timeout"]) + 1), (resource.RLIMIT_NPROC, NPROC),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, FSIZE_MB << 20),
                         (resource.RLIMIT_NOFILE, NOFILE), (resource.RLIMIT_AS, req["memory_mb"] << 20)):
            resource.setrlimit(res, (lim, lim + (res == resource.RLIMIT_CPU)))  # CPU: SIGXCPU first, then SIGKILL
        sys.stdout.reconfigure(line_buffering=True)  # what was printed before a timeout still comes back
        rc = _run_script(req["code"], req["echo"])
    except BaseException as e:
        os.write(2, f"sandbox setup failed: {e!r}\n".encode())
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):  # the code may have swapped them
        with contextlib.suppress(BaseException):
            stream.flush()
    with contextlib.suppress(BaseException):  # the answer goes out before this big process takes its time to exit
        conn.send(json.dumps(dict(rc=rc, elapsed=time.monotonic() - t0)).encode())
        ctrl.send(b"done")
    os._exit(rc)


def fork_server(sock_dir, preload=PRELOAD + HEAVY):
    """Pre-import, probe the kernel, then keep WARM sandboxes waiting on the socket and watch the calls they take."""
    for name in preload:
        with contextlib.suppress(ImportError):
            __import__(name)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(os.path.join(sock_dir, "socket"))
    srv.listen(1024)
    dirs, r, w = _interpreter_dirs(), *os.pipe()
    gc.freeze()  # the preloaded objects are never scanned in the children, so their pages stay shared
    if (probe := os.fork()) == 0:  # try all of it in a throwaway child first: a refusal halfway is not undone
        try:
            _isolate_server(dirs)
            if (init := os.fork()) == 0:
                _enter_sandbox(_scratch_dirs(dirs))
                os._exit(0)
            os._exit(os.waitpid(init, 0)[1] and 1)
        except OSError as e:
            os.write(w, str(e).encode())
            os._exit(1)
    os.close(w)
    why = os.waitpid(probe, 0)[1] and (os.read(r, 4096).decode() or "the probe failed")
    if why:
        print(f"sandbox: no user namespace ({why}); falling back to rlimits and a process group: NOT isolated from "
              "the network, detached processes, this user's files. To enable: sysctl user.max_user_namespaces=15000 "
              "kernel.unprivileged_userns_clone=1 (Debian) kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu)",
              file=sys.stderr, flush=True)
    else:
        _isolate_server(dirs)
        parent = os.pidfd_open(os.getpid())
        if (pid := os.fork()) != 0:  # the server is PID 1 of its namespace: all sandboxes die with it
            os._exit(max(0, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the pool killed the parent, so go too
        if select.select([parent], [], [], 0)[0]:  # it died before the line above (its pid is not visible here)
            os._exit(1)
        os.close(parent)
    print("ready", "fallback" if why else "isolated", flush=True)
    view = None if why else _scratch_dirs(dirs)  # a call ends at its timeout, the client's cancel or the sandbox's exit
    sel, boxes, count, server = selectors.DefaultSelector(), {}, itertools.count(), os.getpid()
    own_pid_ns = view is not None and os.open("/proc/self/ns/pid", os.O_RDONLY)
    sel.register(0, selectors.EVENT_READ, ("stdin", None))

    def spawn():
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        scratch, uid = None if view is not None else tempfile.mkdtemp(prefix="sandbox-run-"), 0
        if scratch and os.getuid() == 0:  # a uid of its own: the calls cannot signal one another
            uid = HOST_UID + 1 + next(count) % 100000
            os.chown(scratch, uid, uid)
        if view is not None:
            _unshare(NEWPID)  # the next child is init of a new PID namespace
        if (pid := os.fork()) == 0:
            ours.close()
            _sandbox(srv, theirs, view, uid, scratch, server)
        if view is not None:
            _check(_libc.setns(own_pid_ns, NEWPID), "setns")
        theirs.close()
        box = boxes[pid] = dict(pid=pid, pidfd=os.pidfd_open(pid), ctrl=ours, scratch=scratch)
        sel.register(box["pidfd"], selectors.EVENT_READ, ("exit", box))
        sel.register(ours, selectors.EVENT_READ, ("ctrl", box))

    def end(box, reap=False, **reply):
        """Kill what is left of the call, reap it if it exited, send the answer if any (the client takes the first)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(box["pid"], signal.SIGKILL)  # before the reaping: the group id cannot be reused yet
        if reap:
            reply = dict(rc=os.waitstatus_to_exitcode(os.waitpid(box["pid"], 0)[1]))
        if conn := box.pop("conn", None):
            sel.unregister(conn)
            with contextlib.suppress(OSError):
                conn.recv(64, socket.MSG_DONTWAIT)  # data left unread would reset the connection at close
            with contextlib.suppress(OSError):
                conn.send(json.dumps(dict(reply, elapsed=time.monotonic() - box["t0"])).encode()) if reply else None
            conn.close()

    while True:
        busy, warm = [b for b in boxes.values() if "conn" in b], sum("t0" not in b for b in boxes.values())
        wait = max(0.0, min((b["deadline"] for b in busy), default=time.monotonic() + 3600) - time.monotonic())
        events = sel.select(0 if warm < WARM else wait)
        if not events and warm < WARM:
            spawn()
        for key, _ in events:
            what, box = key.data
            if box and box["pid"] not in boxes:
                continue  # it exited earlier in this batch
            if what == "stdin" and not os.read(0, 1):
                return  # the client process is gone
            if what == "ctrl":
                msg, fds, _, _ = socket.recv_fds(box["ctrl"], 64, 1)
                if fds:  # it took a call
                    box.update(conn=socket.socket(fileno=fds[0]), t0=(t := time.monotonic()), deadline=t + float(msg))
                    sel.register(box["conn"], selectors.EVENT_READ, ("cancel", box))
                elif msg:  # it answered (or the code forged this: then the client gets no answer, nothing runs on)
                    end(box)
                else:  # it has exited: its pidfd says how
                    sel.unregister(box["ctrl"])
            elif what == "cancel":
                end(box, why="cancelled")
            elif what == "exit":
                end(box, reap=True)
                del boxes[box["pid"]]
                for f in (box["pidfd"], box["ctrl"]):  # the ctrl socket is unregistered already if it saw the exit
                    sel.unregister(f) if f in sel.get_map() else None
                os.close(box["pidfd"])
                box["ctrl"].close()
                if box["scratch"]:
                    shutil.rmtree(box["scratch"], ignore_errors=True)
        for box in busy:
            if "conn" in box and time.monotonic() >= box["deadline"]:
                end(box, why="timeout")


# -----------------------------------------------------------------------------
# The caller's side: the pool, SandboxFusion's client and a SandboxFusion-compatible HTTP server

class Pool:
    """Client of the fork server: started on first use, restarted when it has died; safe to use from many threads."""

    def __init__(self, preload=PRELOAD):
        self.lock, self.proc, self.dir, self.isolated, self.preload = threading.Lock(), None, None, False, preload
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # a call holds 5 descriptors: calls beyond what the
        self.slots = threading.BoundedSemaphore(max(4, (soft - 256) // 5))  # limit allows wait (a 1024 limit: 153)

    def socket_path(self):
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.close()
                self.dir = tempfile.mkdtemp(prefix="sandbox-")  # mode 0700: only this user reaches the socket
                self.proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), "--fork-server",
                                              self.dir, ",".join(self.preload)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, env=SANDBOX_ENV)
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
        with self.slots:
            try:
                return self._run(req)
            except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):  # the server died (socket_path
                return self._run(req)  # restarts it) or a sandbox did: a call is stateless, so running it anew is safe

    def _run(self, req):
        """Hand the request and our pipes' write ends to a waiting sandbox; read the output here until the answer."""
        request, (out_r, out_w), (err_r, err_w) = os.memfd_create("request"), os.pipe(), os.pipe()
        os.write(request, json.dumps(req).encode())
        out, why, theirs = {out_r: bytearray(), err_r: bytearray()}, None, [request, out_w, err_w]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.settimeout(req["timeout"] + 30)
                s.connect(self.socket_path())
                socket.send_fds(s, [b"run"], theirs)
                while theirs:  # ours closed, the pipes end when the sandbox's copies do
                    os.close(theirs.pop())
                poll, wait = select.poll(), {out_r, err_r, s.fileno()}  # poll: descriptors above 1024 are fine
                for fd in wait:
                    poll.register(fd, select.POLLIN)
                while s.fileno() in wait:
                    for fd in [fd for fd, _ in poll.poll((req["timeout"] + 30) * 1000)] or [s.fileno()]:
                        if fd == s.fileno():
                            wait = set()
                        elif chunk := os.read(fd, 1 << 16):
                            out[fd] += chunk
                        else:
                            poll.unregister(fd)
                    if len(out[out_r]) + len(out[err_r]) > HARD_OUTPUT_BYTES and not why:
                        why = "flood"
                        s.shutdown(socket.SHUT_WR)  # the server sees it and ends the call
                reply = json.loads(s.recv(4096) or b"{}")
            for fd in out:  # what was written before the answer; children still running are not waited for
                os.set_blocking(fd, False)
                with contextlib.suppress(BlockingIOError):
                    while len(out[fd]) <= HARD_OUTPUT_BYTES and (chunk := os.read(fd, 1 << 16)):
                        out[fd] += chunk
        finally:
            for fd in [*theirs, out_r, err_r]:
                os.close(fd)
        code, why = reply.get("rc"), why or reply.get("why") or ("" if reply else "lost")
        sig = -code if code is not None and code < 0 else 0
        if why == "timeout" or sig == signal.SIGXCPU:
            status, note = "timeout", f"time limit of {req['timeout']:g} s exceeded"
        elif why or sig:
            status, note = "killed", {"flood": f"output over {HARD_OUTPUT_BYTES} bytes", "lost": "the server died"}.get(
                why, f"killed by signal {sig}")
        else:
            status, note = "ok" if code == 0 else "memory" if code == MEMORY_EXIT else "error", ""
        stdout, stderr = (truncate(out[fd].decode(errors="replace"), req["max_chars"]) for fd in (out_r, err_r))
        return ExecResult(status, stdout, stderr + (f"[sandbox: {note}]\n" if note else ""),
                          round(reply.get("elapsed", 0.0), 6), (bytes(out[out_r]), bytes(out[err_r])))


_POOL, _HEAVY_POOL = Pool(), Pool(PRELOAD + HEAVY)  # the second starts on the first call that names sympy
atexit.register(_POOL.close)
atexit.register(_HEAVY_POOL.close)


def run_code(code, timeout=10.0, memory_mb=2048, *, stdin="", max_chars=MAX_CHARS, echo=True):
    """Run `code` in a fresh sandbox; thread-safe; never raises."""
    req = dict(code=code, timeout=float(timeout), memory_mb=int(memory_mb), stdin=stdin, echo=echo, max_chars=max_chars)
    try:
        return (_HEAVY_POOL if HEAVY_USE.search(code) else _POOL).run(req)
    except Exception as e:
        return ExecResult("killed", "", f"sandbox failure: {e!r}", 0.0)


def as_unprivileged(argv, home, uid=65534):
    """The command that runs `argv` as `uid` (a root caller checking what a user gets), where a closed dir above the
    interpreter (/root) is covered by an open tmpfs with the prefix bound back; `home`: world-readable, parks there."""
    script = ["set -e"]
    for i, d in enumerate(sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)})):
        if top := _closed(d):
            cover = f"mount -t tmpfs -o mode=755 tmpfs {top}"
            script += [f"mkdir -p {home}/park{i}", f"mount --bind {d} {home}/park{i}",
                       *([cover] if cover not in script else []), f"mkdir -p {d}", f"mount --bind {home}/park{i} {d}"]
    script.append(f"exec setpriv --reuid={uid} --regid={uid} --clear-groups env HOME={home} PYTHONPATH={home} "
                  + shlex.join(argv))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]


def from_fusion(resp, max_chars=MAX_CHARS):
    """SandboxFusion's /run_code response -> ExecResult."""
    run = resp.get("run_result") or {}
    out, err = truncate(run.get("stdout") or "", max_chars), truncate(run.get("stderr") or "", max_chars)
    t = float(run.get("execution_time") or 0.0)
    if resp.get("status") == "SandboxError" or not run:
        return ExecResult("killed", out, err + f"sandbox error: {resp.get('message', '')}", t)
    status = ("ok" if resp.get("status") == "Success" else "timeout" if run.get("status") == "TimeLimitExceeded"
              else "memory" if err.rstrip().rsplit("\n", 1)[-1].startswith("MemoryError")
              else "killed" if (run.get("return_code") or 0) < 0 else "error")
    return ExecResult(status, out, err, t)


def make_executor(url=None, memory_mb=2048):
    """execute(code, timeout=10.0, echo=True) -> ExecResult from our pool (None, "local") or SandboxFusion at `url`."""
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
        r = run_code(code, timeout, memory_mb if memory_mb > 0 else 2048, stdin=stdin, echo=False)  # a plain script
        run = dict(status="TimeLimitExceeded" if r.status == "timeout" else "Finished", execution_time=r.elapsed_s,
                   return_code={"ok": 0, "killed": -9, "timeout": None}.get(r.status, 1), stdout=r.stdout,
                   stderr=r.stderr)
        self.reply(200, dict(status="Success" if r.status == "ok" else "Failed", message="", compile_result=None,
                             run_result=run, executor_pod_name=None, files={}))  # SandboxFusion's response

    log_message = lambda self, *args: None  # a line per request would drown the training log


def make_server(cfg):
    server = ThreadingHTTPServer((cfg.host, cfg.port), _Handler)
    server.daemon_threads, server.cfg = True, cfg
    return server


def main():
    p = argparse.ArgumentParser(description="SandboxFusion-compatible POST /run_code over the local sandbox pool")
    p.add_argument("--serve", action="store_true", required=True)
    for f in fields(Config):
        p.add_argument(f"--{f.name}", type=f.type, default=f.default)
    cfg = Config(**{k: v for k, v in vars(p.parse_args()).items() if k != "serve"})
    server = make_server(cfg)
    print(f"sandbox: {cfg}; POST http://{cfg.host}:{server.server_address[1]}/run_code", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    fork_server(sys.argv[2], tuple(sys.argv[3].split(","))) if sys.argv[1:2] == ["--fork-server"] else main()
