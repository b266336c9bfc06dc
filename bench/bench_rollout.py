"""bench/bench_rollout.py: continuous vs turn-synchronous multi-turn rollouts (`rollout.rollout` with
mode="continuous" vs mode="sync", the same loop and seeds), in one run:

(a) a simulated engine driven by the real loop: per-step cost = fixed + per running sequence + per prefill token
    (prefix caching: a resubmitted episode prefills only its new tokens), log-normal turn lengths, a tool call in
    a turn with probability 3/4, tool latencies log-uniform from 50 ms to 10 s; at the paper's shape (1,024
    episodes, <= 16 turns, <= 20,480 tokens, vLLM-like step costs) and at the toy's (64 episodes, <= 4 turns, <= 256
    tokens, the CPU HF engine's step costs). Simulated time runs --speedup times faster than real time (engine
    steps and tool calls sleep; the loop's own work runs in real time, so it weighs --speedup times more than on a
    real engine: keep the speedup modest): wall-clock in simulated seconds and the engine's busy fraction.
(b) the real HF engine on CPU with the real sandbox on the toy task (64 episodes as in configs/toy.py): wall-clock,
    whether both modes gave the same episodes, and where the engine's time went (decode steps, rows decoded,
    attention columns read, time in decode steps and in admitting turns: prefill + merge into the batch).
(c) sample_token with and without the nucleus sort.
Speed-ups are sync wall / continuous wall.

    python bench/bench_rollout.py --model out/toy/student_sft      # a toy SFT model (toy.sh trains one)
    python bench/bench_rollout.py --sim_only --speedup 50          # (a) only, the loop's own work weighing less
"""
import argparse
import heapq
import math
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
import rollout  # noqa: E402
import tools  # noqa: E402
import toy  # noqa: E402
from sandbox import ExecResult  # noqa: E402

CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "sleep %.4f"}}\n</tool_call>'
SHAPES = {  # episodes, max turns, max response tokens, turn length (median, sigma), step cost (s): fixed, per
    # running sequence, per prefill token
    "paper": (1024, 16, 20480, (600, 1.0), (8e-3, 30e-6, 25e-6)),
    "toy": (64, 4, 256, (40, 0.6), (0.7e-3, 90e-6, 10e-6)),
}


class SimEngine(rollout.Engine):
    """Turns drawn from their seed (so both modes get the same workload); each poll() runs engine steps until a turn
    finishes or 0.1 simulated seconds pass, then sleeps their cost / speedup."""

    def __init__(self, tok, shape, speedup):
        _, _, _, (self.median, self.sigma), (self.c0, self.c1, self.c2) = SHAPES[shape]
        self.tok, self.speedup = tok, speedup
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.filler = tok.encode(" x", add_special_tokens=False)
        self.running, self.step, self.prefill, self.seen, self.busy = [], 0, 0, {}, 0.0

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        rng = random.Random(seed)
        n = max(1, int(rng.lognormvariate(math.log(self.median), self.sigma)))
        tail = (self.tok.encode(CALL % math.exp(rng.uniform(math.log(0.05), math.log(10.0))),
                                add_special_tokens=False) if rng.random() < 0.75 else []) + [self.im_end]
        new = (self.filler * n + tail)[:max_new_tokens]
        self.prefill += len(ids) - self.seen.get(key, 0)  # the rest is in the prefix cache
        self.seen[key] = len(ids) + len(new)
        heapq.heappush(self.running, (self.step + len(new), key, new))

    def poll(self):
        cost, out = 0.0, []
        while self.running and not out and cost < 0.1:
            cost += self.c0 + self.c1 * len(self.running) + self.c2 * self.prefill
            self.prefill, self.step = 0, self.step + 1
            while self.running and self.running[0][0] <= self.step:
                _, key, new = heapq.heappop(self.running)
                out.append((key, new, [0.0] * len(new), "stop" if new[-1] == self.im_end else "length"))
        time.sleep(cost / self.speedup)
        self.busy += cost
        return out


def simulate(tok, shape, mode, speedup, prompt):
    episodes, max_turns, max_len, _, _ = SHAPES[shape]
    eng = SimEngine(tok, shape, speedup)

    def execute(code, timeout, echo=True):
        time.sleep(float(code.split()[1]) / speedup)
        return ExecResult("ok", "42\n", "", 0.0)
    t0 = time.perf_counter()
    eps = rollout.rollout(eng, tok, [prompt] * episodes, max_turns=max_turns, max_response_len=max_len,
                          execute=execute, mode=mode, seed=0)
    wall = (time.perf_counter() - t0) * speedup
    return wall, eng.busy / wall, eps


class CountingHF(rollout.HFEngine):
    """The HF engine, counting its decode steps (rows, attention columns, time) and the time it spends admitting
    turns (their prefill and the merge into the running batch)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.n = dict(steps=0, rows=0, cols=0, decode_s=0.0, admit_s=0.0)
        self.admitting = False

    def admit(self):
        t0, self.admitting = time.perf_counter(), True
        super().admit()
        self.n["admit_s"] += time.perf_counter() - t0
        self.admitting = False

    def forward(self, ids, attn, pos, kv, **kw):
        t0 = time.perf_counter()
        out = super().forward(ids, attn, pos, kv, **kw)
        if not self.admitting:
            self.n["steps"] += 1
            self.n["rows"] += ids.shape[0]
            self.n["cols"] += attn.numel()
            self.n["decode_s"] += time.perf_counter() - t0
        return out


def toy_run(model, tok, problems, mode, execute):
    """One rollout of configs/toy.py's step: 4 episodes per problem, <= 4 turns, <= 256 tokens, T = 1, top_p = 1."""
    eng = CountingHF(model, tok)
    t0 = time.perf_counter()
    eps = rollout.rollout(eng, tok, [p["prompt_ids"] for p in problems for _ in range(4)], max_turns=4,
                          max_response_len=256, execute=execute,
                          tools=tools.tool_protocol(max_chars=256, timeout=5.0),
                          mode=mode, seed=0)
    return time.perf_counter() - t0, eps, eng.n


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="out/toy/student_sft", help="a toy SFT model (run dir or HF dir)")
    ap.add_argument("--speedup", type=float, default=20.0, help="simulated seconds per real second")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the CPU toy")
    ap.add_argument("--repeats", type=int, default=3, help="CPU toy runs per mode (the fastest counts)")
    ap.add_argument("--sim_only", action="store_true", help="(a) only")
    args = ap.parse_args()
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(args.model) and not args.sim_only and not args.model.startswith(("toy:", "shape:")):
        raise SystemExit(f"bench_rollout: no model at {args.model}; train one with toy.sh or train_sft.py "
                         "(configs/toy_sft.py) or pass --model")
    torch.set_num_threads(args.threads)
    tok = models.make_toy_tokenizer()
    prompt = tok.apply_chat_template(toy.toy_problems(1, 0)[0]["prompt_messages"], tools=tools.TOOLS,
                                     add_generation_prompt=True, tokenize=True, return_dict=False)
    ratios = {}
    print(f"(a) simulated engine, {args.speedup:g}x faster than real time")
    print("| shape | mode | wall (sim s) | engine busy | engine work (sim s) | turns | tool calls | tokens |")
    print("|---|---|---|---|---|---|---|---|")
    work = {}
    for shape in ("paper", "toy"):
        walls = {}
        for mode in ("sync", "continuous"):
            wall, busy, eps = simulate(tok, shape, mode, args.speedup, prompt)
            walls[mode], work[shape, mode] = wall, busy * wall
            print(f"| {shape} | {mode} | {wall:,.0f} | {busy:.0%} | {busy * wall:,.0f} | "
                  f"{sum(e.num_turns for e in eps):,} | {sum(e.num_tool_calls for e in eps):,} | "
                  f"{sum(sum(e.mask) for e in eps):,} |", flush=True)
        ratios[f"sim-{shape}"] = walls["sync"] / walls["continuous"]
        print(f"| {shape} | speed-up | {ratios[f'sim-{shape}']:.2f}x | | sync / continuous engine work: "
              f"{work[shape, 'sync'] / work[shape, 'continuous']:.2f}x | | | |", flush=True)
    if args.sim_only:
        return

    import sandbox
    model, _ = models.load_model(args.model)
    problems = toy.toy_problems(16, 1)
    for p in problems:
        p["prompt_ids"] = tok.apply_chat_template(p["prompt_messages"], tools=tools.TOOLS, add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)
    execute = sandbox.make_executor()
    toy_run(model, tok, problems[:2], "sync", execute)  # warm-up: the sandbox pool, first-call allocations
    print(f"\n(b) HF engine on CPU ({args.threads} thread(s)), real sandbox, toy task: 16 problems x 4 episodes, "
          f"<= 4 turns, <= 256 tokens")
    print("| mode | wall (s), best of runs | turns | tool calls | tokens | decode steps | rows decoded | attention "
          "columns | decode (s) | admit: prefill + merge (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    best, eps, n = {"sync": [], "continuous": []}, {}, {}
    for _ in range(args.repeats):
        for mode in ("sync", "continuous"):  # interleaved, so load from elsewhere hits both alike
            wall, eps[mode], count = toy_run(model, tok, problems, mode, execute)
            if not best[mode] or wall < min(best[mode]):
                n[mode] = count  # the counts of the fastest run
            best[mode].append(wall)
    for mode in ("sync", "continuous"):
        e, c = eps[mode], n[mode]
        print(f"| {mode} | {min(best[mode]):.2f} ({', '.join(f'{w:.2f}' for w in best[mode])}) | "
              f"{sum(x.num_turns for x in e)} | {sum(x.num_tool_calls for x in e)} | {sum(sum(x.mask) for x in e)} | "
              f"{c['steps']} | {c['rows']:,} | {c['cols'] / 1e6:.2f}M | {c['decode_s']:.2f} | {c['admit_s']:.2f} |")
    same = all(a.ids == b.ids for a, b in zip(eps["sync"], eps["continuous"]))
    print(f"same episodes in both modes: {'yes' if same else 'NO'}")
    ratios["cpu-toy"] = min(best["sync"]) / min(best["continuous"])

    print(f"\n(c) sample_token over Qwen3's 151,936-token vocabulary ({args.threads} thread(s)), best of 5: "
          "top_p = 1 (no sort) vs a nucleus (top_p = 0.95: the sort)")
    for B in (1, 64):
        logits = torch.randn(B, 151936) * 3
        t = {}
        for top_p in (1.0, 0.95):
            t[top_p] = min(timed(rollout.sample_token, logits, 1.0, top_p) for _ in range(5))
        print(f"batch {B}: {t[1.0] * 1e3:.2f} ms vs {t[0.95] * 1e3:.2f} ms: {t[0.95] / t[1.0]:.1f}x")
    print(f"continuous/sync at the toy's shape, simulated: {ratios['sim-toy']:.2f}x")
    print(f"continuous/sync: sim-paper {ratios['sim-paper']:.2f}x, cpu-toy {ratios['cpu-toy']:.2f}x")


if __name__ == "__main__":
    main()
