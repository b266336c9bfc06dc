"""bench/bench_sod_loss.py: speed and memory of sod_loss.py against the naive ways, printed as ratios from one run.

1. sod_weights on a (B, T) batch with ~16 steps per row, against a per-row, per-step Python loop with .item() (the
   reference style) and against one elementwise pass (s - t).abs() * m over the same tensors (the floor), eager and
   torch.compile'd. Every path runs on the same full batch: one warm-up call, then the median of --reps calls.
2. token_logprobs at V = 151,936 (Qwen3), hidden 1024, T = 4096: peak memory and time vs the naive full-vocab fp32
   log_softmax, for scoring (no grad) and training (forward + backward). Each case runs in a fresh subprocess. Its
   peak is that of the first call, above the memory held before it: the resident-set high-water mark (CPU: /proc
   VmHWM, reset before the call) or torch.cuda.max_memory_allocated (GPU); the first call is also the warm-up, and
   the time is the median of --lp_reps calls after it.

    python bench/bench_sod_loss.py            # full sizes (CPU: a few minutes, ~9 GB of RAM for the naive path)
    python bench/bench_sod_loss.py --small    # quick run on small sizes
    python bench/bench_sod_loss.py --device cuda
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sod_loss  # noqa: E402


def make_batch(B, T, steps, device, seed=0):
    """Rows: a prompt, then `steps` assistant turns separated by tool responses, then padding; random lengths."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(B, T)
    for b in range(B):
        lens = torch.randint(1, int(1.8 * T / (2 * steps + 1)), (2 * steps + 1,), generator=g).tolist()  # ~0.9 T
        i = lens[0]  # prompt
        for k in range(steps):
            m[b, i:i + lens[2 * k + 1]] = 1.0
            i += lens[2 * k + 1] + lens[2 * k + 2]
    s, t = -torch.rand(B, T, generator=g) * 2, -torch.rand(B, T, generator=g) * 2
    return s.to(device), t.to(device), m.to(device)


def loop_weights(s, t, m, rows, eps=1e-6, delta=0.2):
    """Reference style: per row, step boundaries on the host, then per step a mean and an .item()."""
    w = torch.zeros_like(s)
    for b in rows:
        edges = torch.diff(m[b], prepend=m.new_zeros(1), append=m.new_zeros(1)).nonzero().flatten().tolist()
        runs = list(zip(edges[0::2], edges[1::2]))
        d = [(s[b, a:e] - t[b, a:e]).abs().mean().item() for a, e in runs]
        prod = 1.0
        for k, (a, e) in enumerate(runs):
            if k > 0:
                prod *= (d[k - 1] + eps) / (d[k] + eps)
            w[b, a:e] = 1.0 if k == 0 else min(prod, 1 + delta)
    return w


def timeit(fn, reps, device):
    """Median wall time of reps calls after one warm-up call (allocator, caches, lazy init)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_weights(B, T, steps, reps, device):
    s, t, m = make_batch(B, T, steps, device)
    n_steps = (sod_loss.step_ids(m).amax(1) + 1).float().mean().item()
    print(f"sod_weights: B={B} T={T} {n_steps:.1f} steps/row, {device}, {torch.get_num_threads()} threads, "
          f"median of {reps} calls after a warm-up, every path on all {B} rows")
    eager = sod_loss.sod_weights(s, t, m)
    assert torch.allclose(eager, loop_weights(s, t, m, range(B)), rtol=1e-5, atol=1e-6), "loop and vectorised differ"
    floor = timeit(lambda: (s - t).abs() * m, reps, device)
    t_loop = timeit(lambda: loop_weights(s, t, m, range(B)), reps, device)
    t_eager = timeit(lambda: sod_loss.sod_weights(s, t, m), reps, device)
    print(f"  floor (s-t).abs()*m: {floor * 1e3:.2f} ms")
    print(f"  loop with .item():   {t_loop * 1e3:.1f} ms = {t_loop / floor:.1f}x the floor")
    print(f"  eager:    {t_eager * 1e3:.2f} ms = {t_loop / t_eager:.1f}x faster than the loop, "
          f"{t_eager / floor:.1f}x the floor")
    sod_loss.COMPILE = True
    t0 = time.perf_counter()
    compiled = sod_loss.sod_weights(s, t, m)
    first = time.perf_counter() - t0
    if sod_loss._compiled is False:
        print("  compiled: unavailable")
        return
    t_comp = timeit(lambda: sod_loss.sod_weights(s, t, m), reps, device)
    same = "bit-identical" if torch.equal(compiled, eager) else f"max |diff| {(compiled - eager).abs().max():.1e}"
    print(f"  compiled: {t_comp * 1e3:.2f} ms = {t_loop / t_comp:.1f}x faster than the loop, "
          f"{t_comp / floor:.1f}x the floor, {t_comp / t_eager:.2f}x eager (first call incl. compile {first:.1f} s; "
          f"vs eager: {same})")
    sod_loss.COMPILE = False


def logprob_case(mode, T, H, V, chunk, reps, device):
    """Runs in a subprocess: one naive or chunked call whose peak memory above the inputs is measured, then reps
    timed calls; prints JSON with the peak, the median time and a checksum of the output."""
    torch.manual_seed(0)
    train = mode.endswith("train")
    h = torch.randn(1, T, H, device=device, requires_grad=train)
    w = (torch.randn(V, H, device=device) * 0.02).requires_grad_(train)
    y = torch.randint(0, V, (1, T), device=device)
    up = torch.randn(1, T, device=device)

    def run():
        h.grad = w.grad = None  # each call starts without gradients, as a training step does
        with torch.set_grad_enabled(train):
            if mode.startswith("naive"):
                out = torch.log_softmax(h @ w.T, dim=-1).gather(-1, y[..., None]).squeeze(-1)
            else:
                out = sod_loss.token_logprobs(h, w, y, chunk_size=chunk)
            if train:
                (out * up).sum().backward()
        return out.detach()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    out = run()  # the measured peak is this first call's: later calls reuse freed blocks the RSS still holds
    sync()
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else (rss_kb("VmHWM") - base) * 1024
    times = []
    for _ in range(reps):  # the call above was the warm-up
        t0 = time.perf_counter()
        out = run()
        sync()
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(peak=peak, time=statistics.median(times), checksum=float(out.double().sum()))))


def rss_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def bench_logprobs(T, H, V, chunk, reps, device):
    print(f"token_logprobs: T={T} H={H} V={V} chunk={chunk}, {device}, fp32, {torch.get_num_threads()} threads; "
          f"each case in a fresh process: peak of its first call above the inputs, time the median of {reps} calls "
          "after it")
    res = {}
    for mode in ("naive_score", "chunked_score", "naive_train", "chunked_train"):
        cmd = [sys.executable, __file__, "--case", mode, "--T", str(T), "--H", str(H), "--V", str(V),
               "--chunk", str(chunk), "--lp_reps", str(reps), "--threads", str(torch.get_num_threads()),
               "--device", device]
        res[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    for kind in ("score", "train"):
        n, c = res[f"naive_{kind}"], res[f"chunked_{kind}"]
        assert abs(n["checksum"] - c["checksum"]) < 1e-3 * abs(n["checksum"]), (n, c)
        label = "scoring (no grad)" if kind == "score" else "training (fwd+bwd)"
        print(f"  {label:19s} peak {c['peak'] / 2**20:7.0f} MiB vs naive {n['peak'] / 2**20:7.0f} MiB = "
              f"1/{n['peak'] / max(c['peak'], 1):.1f};  time {c['time']:.2f} s vs {n['time']:.2f} s = "
              f"{c['time'] / n['time']:.2f}x")
    print(f"  (training: both include the fp32 weight gradient, {V * H * 4 / 2**20:.0f} MiB)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="small sizes, seconds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--reps", type=int, default=10, help="timed calls per sod_weights path")
    p.add_argument("--lp_reps", type=int, default=3, help="timed calls per token_logprobs case")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--H", type=int, default=1024)
    p.add_argument("--V", type=int, default=151936)
    p.add_argument("--chunk", type=int, default=512)
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU visible to torch")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.case:
        return logprob_case(a.case, a.T, a.H, a.V, a.chunk, a.lp_reps, a.device)
    if a.small:
        bench_weights(B=32, T=1024, steps=16, reps=a.reps, device=a.device)
        bench_logprobs(T=512, H=256, V=32768, chunk=128, reps=a.lp_reps, device=a.device)
    else:
        bench_weights(B=256, T=4096, steps=16, reps=a.reps, device=a.device)
        bench_logprobs(T=a.T, H=a.H, V=a.V, chunk=a.chunk, reps=a.lp_reps, device=a.device)

if __name__ == "__main__":
    main()
