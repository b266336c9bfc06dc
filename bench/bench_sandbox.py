"""bench/bench_sandbox.py: executions per second and latency of sandbox.run_code against a naive
`subprocess.run([python, "-c", code])` per call, for short programs, at concurrency 1 and 2, in one run.

The naive way starts a new interpreter per call and isolates nothing; ours forks a fresh, isolated process from a
warm server (namespaces, uid drop, mounts, rlimits included). The pool's start-up is timed separately.

    python bench/bench_sandbox.py              # 300 calls per (program, concurrency) for ours, 60 for the naive way
    python bench/bench_sandbox.py --n 100
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sandbox  # noqa: E402

PROGRAMS = {
    "print": "print('hello')",
    "arith": "x = 3**200 % 1000007\nx",
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300, help="calls per (program, concurrency) for ours")
    p.add_argument("--n_naive", type=int, default=60, help="calls per (program, concurrency) for the naive way")
    args = p.parse_args()
    t = time.perf_counter()
    sandbox.run_code("pass")
    print(f"pool start-up (fork server, pre-imports, isolation probe): {time.perf_counter() - t:.2f} s; "
          f"isolated: {sandbox._POOL.isolated}; cpus: {os.cpu_count()}")
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
              f"{ra / rb:6.1f} {b50 / a50:6.1f}")


if __name__ == "__main__":
    main()
