"""bench/bench_sandbox.py: executions per second and latency of sandbox.run_code against a naive
`subprocess.run([python, "-c", code])` per call, for short programs, at concurrency 1 and 2, in one run; first
where the time of one call goes, then (when run as root) the same table again as the unprivileged uid 65534.

The naive way starts a new interpreter per call and isolates nothing; ours hands the code to a sandbox that a warm
server forked earlier and that waits inside its namespaces; the server forks its replacement meanwhile.

    python bench/bench_sandbox.py              # 300 calls per (program, concurrency) for ours, 60 for the naive way
    python bench/bench_sandbox.py --n 100 --as_root_only
"""
import argparse
import gc
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import sandbox  # noqa: E402

PROGRAMS = {
    "print": "print('hello')",
    "arith": "x = 3**200 % 1000007\nx",
    "numpy": "import numpy as np\nint(np.arange(1000).sum())",
    "sympy": "import sympy\nsympy.factorint(2**64 + 1)",
}


def naive(code, timeout):
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr


def ours(code, timeout):
    r = sandbox.run_code(code, timeout)
    assert r.status == "ok", r


def measure(fn, code, n, conc, bar):
    """Run `fn(code)` n times with `conc` threads: (calls per second, p50 ms, p99 ms)."""
    def one(_):
        t = time.perf_counter()
        fn(code, 30.0)
        bar.update()
        return time.perf_counter() - t
    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as ex:
        lat = sorted(ex.map(one, range(n)))
    wall = time.perf_counter() - t0
    return n / wall, 1e3 * statistics.median(lat), 1e3 * lat[min(n - 1, int(0.99 * n))]


def ms(ts):
    return 1e3 * statistics.median(ts)


def server_side(n=100):
    """In a throwaway copy of the fork server: a bare fork + exit, then what making one sandbox costs, by step."""
    for name in sandbox.PRELOAD:
        importlib.import_module(name)
    dirs = sandbox._interpreter_dirs()
    gc.freeze()
    fork = []
    for _ in range(n):
        t = time.perf_counter()
        if (pid := os.fork()) == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        fork.append(time.perf_counter() - t)
    print(f"  bare fork + exit + wait of the warm server (numpy loaded): {ms(fork):.2f} ms")
    sandbox._isolate_server(dirs)
    if (server := os.fork()) != 0:
        os._exit(os.waitstatus_to_exitcode(os.waitpid(server, 0)[1]))
    own, steps = os.open("/proc/self/ns/pid", os.O_RDONLY), {"fork (server side)": [], "namespaces + mounts": [],
                                                              "exit + wait": [], "total": []}
    for _ in range(n):
        r, w = os.pipe()
        t0 = time.perf_counter()
        sandbox._unshare(sandbox.NEWPID)
        if (pid := os.fork()) == 0:
            t = time.perf_counter()
            sandbox._enter_sandbox(sandbox._scratch_dirs(dirs))
            os.write(w, str(time.perf_counter() - t).encode())
            os._exit(0)
        sandbox._check(sandbox._libc.setns(own, sandbox.NEWPID), "setns")
        steps["fork (server side)"].append(time.perf_counter() - t0)
        os.close(w)
        steps["namespaces + mounts"].append(float(os.read(r, 64)))
        os.close(r)
        t = time.perf_counter()
        os.waitpid(pid, 0)
        steps["exit + wait"].append(time.perf_counter() - t)
        steps["total"].append(time.perf_counter() - t0)
    print("  making one sandbox, in the background: " + ", ".join(f"{k} {ms(v):.2f} ms" for k, v in steps.items()))
    os._exit(0)


def breakdown():
    print("where the time of one call goes (medians):")
    sys.stdout.flush()
    if (pid := os.fork()) == 0:
        try:
            server_side()
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    rt, inside = [], []
    for _ in range(100):
        time.sleep(0.02)  # a waiting sandbox is ready
        t = time.perf_counter()
        r = sandbox.run_code("print('hello')")
        rt.append(time.perf_counter() - t)
        inside.append(r.elapsed_s)
    print(f"  a call with a sandbox waiting: {ms(rt):.2f} ms round trip, of which {ms(inside):.2f} ms in the sandbox "
          "(take the call, set limits, run, answer); the rest is the client and two wake-ups")
    cpu_per_call()


def cpu_per_call(n=600):
    """CPU time per `print` call at concurrency 2, from /proc: this process (the client), the fork server and the
    sandboxes it reaped, and the rest of the machine (kernel work such as network-namespace teardown, other load)."""
    tick = os.sysconf("SC_CLK_TCK")

    def own_and_reaped(pid):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:13]) / tick, sum(int(x) for x in f[13:15]) / tick

    def busy():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / tick
    top = sandbox._POOL.proc.pid
    procs = [top] + [int(c) for c in open(f"/proc/{top}/task/{top}/children").read().split()]  # the server

    def sample():
        server = [own_and_reaped(p) for p in procs]
        return busy(), own_and_reaped(os.getpid())[0], sum(o for o, _ in server), sum(r for _, r in server)
    a, t0 = sample(), time.perf_counter()
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(lambda _: sandbox.run_code("print('hello')"), range(n)))
    wall, b = time.perf_counter() - t0, sample()
    total, client, server, boxes = ((y - x) / n * 1e3 for x, y in zip(a, b))
    rest, cores = total - client - server - boxes, os.cpu_count()
    print(f"  CPU per call at concurrency 2 ({n} calls of `print`, {n / wall:.0f} calls/s, the machine "
          f"{total * n / 1e3 / wall / cores:.0%} busy): {total:.2f} ms in all = client {client:.2f} + fork server "
          f"{server:.2f} + sandboxes {boxes:.2f} (namespaces, run, exit) + the rest {rest:.2f} (kernel work, other "
          f"load); {cores} cores allow at most {cores / total * 1e3:.0f} calls/s")


def as_unprivileged(argv):
    """Run this bench again as uid 65534 on a world-readable copy of its files."""
    copy = tempfile.mkdtemp(prefix="sandbox-bench-")
    os.makedirs(f"{copy}/bench")
    for f in ("sandbox.py", "bench/bench_sandbox.py"):
        shutil.copy(os.path.join(ROOT, f), f"{copy}/{f}")
    for d in (copy, f"{copy}/bench"):
        os.chmod(d, 0o755)
    try:
        subprocess.run(sandbox.as_unprivileged([sys.executable, f"{copy}/bench/bench_sandbox.py", *argv,
                                                "--as_root_only"], copy), check=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300, help="calls per (program, concurrency) for ours")
    p.add_argument("--n_naive", type=int, default=60, help="calls per (program, concurrency) for the naive way")
    p.add_argument("--as_root_only", action="store_true", help="do not rerun as uid 65534 when root")
    args = p.parse_args()
    t = time.perf_counter()
    sandbox.run_code("pass")
    print(f"=== uid {os.getuid()}: pool start-up (fork server, pre-imports, isolation probe): "
          f"{time.perf_counter() - t:.2f} s; isolated: {sandbox._POOL.isolated}; cpus: {os.cpu_count()}")
    breakdown()
    total = len(PROGRAMS) * 2 * (args.n + args.n_naive)
    rows = []
    with tqdm(total=total, desc="sandbox bench", unit="call", mininterval=2.0) as bar:
        for name, code in PROGRAMS.items():
            for conc in (1, 2):
                a, b = measure(ours, code, args.n, conc, bar), measure(naive, code, args.n_naive, conc, bar)
                rows.append((name, conc, a, b))
    print(f"{'program':8} {'conc':>4} | {'ours/s':>8} {'p50 ms':>7} {'p99 ms':>7} | {'naive/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} | {'rate x':>6} {'p50 x':>6}")
    for name, conc, (ra, a50, a99), (rb, b50, b99) in rows:
        print(f"{name:8} {conc:>4} | {ra:8.1f} {a50:7.1f} {a99:7.1f} | {rb:8.1f} {b50:7.1f} {b99:7.1f} | "
              f"{ra / rb:6.1f} {b50 / a50:6.1f}", flush=True)
    if os.getuid() == 0 and not args.as_root_only:
        sandbox._POOL.close()
        as_unprivileged([f"--n={args.n}", f"--n_naive={args.n_naive}"])


if __name__ == "__main__":
    main()
