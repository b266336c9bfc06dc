"""The built-in toy task: arithmetic too large for a tiny model's head, solved with one or two tool calls.

Problems with ground truth, and solved multi-turn trajectories for the toy SFT (a quarter of them recover from a
failed call). Everything the real run does runs on it: the chat template, tool calls in the sandbox, masks, FSDP2,
checkpoints, eval (docs/toy.md).
"""

import tools

TOY_PROMPT = "Use the tool, then put the answer in \\boxed{}."
# The fixed phrases of the SFT trajectories (the toy tokenizer keeps each whole, one token: models._toy_chunks)
THINK_CALL, THINK_FIX, THINK_ADD, THINK_DONE = ("I compute it with code.", "The code had a typo. I fix it.",
                                                "Now I add.", "I have the result.")
ANSWER_OPEN = "The answer is \\boxed{"
EVAL_SEED = 999_999  # the toy benchmark's problems (drawn from the "eval" split: see split_of)
EVAL_N = 512  # its size: ~1,000 samples at k = 2, so one accuracy carries about +-3 points of sampling noise


def _call(code, reasoning):
    return {"role": "assistant", "content": "", "reasoning_content": reasoning,
            "tool_calls": [{"type": "function", "function": {"name": tools.TOOL_NAME, "arguments": {"code": code}}}]}


def split_of(question):
    """"eval" for about one question in eight (by a hash of its text), "train" for the rest. Training and SFT draw
    only "train" problems and the benchmark only "eval" ones, so the two never share a problem, whatever the seeds."""
    import hashlib
    return "eval" if hashlib.blake2b(question.encode(), digest_size=8).digest()[0] % 8 == 0 else "train"


def problems(n, seed, split):
    """n distinct seeded problems of one split: "a * b" (one call) or "a * b + c" computed in two calls; ground
    truth as a string."""
    import random
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        # fixed widths: every number sits at a fixed offset in the prompt, which tiny models learn to copy from
        a, b, c = rng.randint(1000, 9999), rng.randint(100, 999), rng.randint(1000, 9999)
        if rng.random() < 0.5:
            q, gt, kind = f"What is {a} * {b}?", a * b, "mul"
        else:
            q, gt, kind = f"What is {a} * {b} + {c}? First multiply, then add.", a * b + c, "muladd"
        if q in seen or split_of(q) != split:
            continue
        seen.add(q)
        out.append({"question": q, "prompt_messages": [{"role": "user", "content": f"{q}\n\n{TOY_PROMPT}"}],
                    "ground_truth": str(gt), "tools": tools.CLEAN_TOOLS, "source": "toy", "kind": kind,
                    "args": (a, b, c), "id": f"toy-{split}-{seed}-{len(out)}"})
    return out


def toy_problems(n, seed):
    """n training problems (SFT and RL draw from these; never an evaluation problem)."""
    return problems(n, seed, "train")


def _tool_reply(code, protocol):
    """What the model reads back when `code` (ours) runs in the sandbox under `protocol` (tools.ToolProtocol's
    name): the sandbox's own script runner, in process, so a traceback is formatted as sandbox.py formats it with
    this interpreter's version; then the protocol's reply text for that result."""
    import contextlib
    import io
    import sys

    import sandbox
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    paper = protocol == "paper"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = sandbox._run_script(run := tools.paper_code(code) if paper else code, echo=not paper)
    finally:
        sys.argv = argv  # _run_script sets it for the code
    res = sandbox.ExecResult("ok" if rc == 0 else "error", out.getvalue(), err.getvalue(), 0.0)
    if paper:
        return tools.paper_observation(res, tools.PROTOCOLS["paper"]["max_chars"], run)
    return tools.observation({"name": tools.TOOL_NAME, "arguments": {"code": code}}, res, 1 << 20)


def toy_sft_conversations(n, seed, protocol="clean", fail=0.25, slip=0.0):
    """Solved toy trajectories in the SFT format (messages + tools): call the tool, read it, answer; two-step
    problems call twice (copying the first result into the second call). A share `fail` of the trajectories first
    make a mistake (a NameError) and fix it from the traceback; a share `slip` miscopy one digit of the second
    operand into the code and answer what the tool then prints (sloppy demonstrations: wrong, but consistent with
    their tool output). Tool messages are the replies of `protocol`."""
    import random
    rng = random.Random(seed + 1)
    convs = []
    for p in toy_problems(n, seed):
        a, b, c = p["args"]
        msgs = list(p["prompt_messages"])
        if slip and rng.random() < slip:  # one digit of b replaced (a number of the same width)
            i, s = rng.randrange(len(str(b))), str(b)
            b = int(s[:i] + rng.choice([x for x in "0123456789"[i == 0:] if x != s[i]]) + s[i + 1:])
        if rng.random() < fail:
            msgs += [_call(f"print({a} * x)", THINK_CALL),
                     {"role": "tool", "content": _tool_reply(f"print({a} * x)", protocol)}]
            first = THINK_FIX
        else:
            first = THINK_CALL
        msgs += [_call(f"print({a} * {b})", first),
                 {"role": "tool", "content": _tool_reply(f"print({a} * {b})", protocol)}]
        answer = a * b
        if p["kind"] == "muladd":
            msgs += [_call(f"print({a * b} + {c})", THINK_ADD),
                     {"role": "tool", "content": _tool_reply(f"print({a * b} + {c})", protocol)}]
            answer += c
        msgs.append({"role": "assistant", "content": f"{ANSWER_OPEN}{answer}}}.", "reasoning_content": THINK_DONE})
        convs.append({"messages": msgs, "tools": tools.CLEAN_TOOLS})
    return convs


def eval_problems(n=EVAL_N):
    """The toy benchmark (eval.py --bench toy): n fixed problems, disjoint from every training problem."""
    return problems(n, EVAL_SEED, "eval")

# -----------------------------------------------------------------------------
# What toy.sh prints: the summary of one run and the table of all (pure functions of the eval JSONs and metrics)

ALGOS = ("grpo", "opd", "sod", "gated")


def _read(path):
    import json
    with open(path) as f:
        return json.load(f)


def rates(run):
    """{problem_id: success rate over its samples} of one eval JSON (eval.py's <bench>.json)."""
    acc = {}
    for r in run["samples"]:
        acc.setdefault(r["problem_id"], []).append(bool(r["acc"]))
    return {p: sum(v) / len(v) for p, v in acc.items()}


def bootstrap(runs_b, runs_a=(), n_boot=1000, seed=0, level=0.95):
    """(mean, lo, hi) of the mean success rate of runs_b (each an eval JSON, e.g. one per training seed) or, with
    runs_a, of the paired difference b - a on the problems they share. Percentile bootstrap over problems (indices
    drawn as eval.bootstrap_ci draws them, the same for both sides) and, within each side, over runs, so seed-to-
    seed spread widens the interval. With one run a side it is eval.py --compare's paired interval."""
    import numpy as np
    sides = [[rates(r) for r in runs] for runs in (runs_b, runs_a) if runs]
    shared = set.intersection(*(set(r) for side in sides for r in side))
    pids = [p for p in sides[-1][0] if p in shared]  # first-seen order of a's (else b's) first run, as eval.py
    mats = [np.array([[r[p] for p in pids] for r in side]) for side in sides]  # (runs, problems) each
    idx = np.random.default_rng(seed).integers(0, len(pids), size=(n_boot, len(pids)))
    pick = np.random.default_rng(seed + 1)
    boot, point = np.zeros(n_boot), 0.0
    for sign, m in zip((1.0, -1.0), mats):
        runs = pick.integers(0, len(m), size=(n_boot, len(m)))
        boot += sign * np.stack([m[runs[i]][:, idx[i]].mean() for i in range(n_boot)])
        point += sign * m.mean()
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(lo), float(hi)


def failures(runs):
    """Over eval JSONs: (share of samples with a failed tool call, share of those that still ended right)."""
    s = [r for run in runs for r in run["samples"]]
    failed = [r for r in s if r["tool_errors"] > 0]
    return len(failed) / max(len(s), 1), (sum(bool(r["acc"]) for r in failed) / len(failed) if failed else None)


def step_failures(metrics_paths):
    """Over training runs (their metrics.jsonl): mean d_k and w_k of the steps after a failed tool call and of the
    steps of episodes without one, from train_sod's fail/* sums and counts over every step."""
    import json
    tot = {}
    for path in metrics_paths:
        with open(path) as f:
            for line in f:
                for k, v in json.loads(line).items():
                    if k.startswith("fail/"):
                        tot[k[5:]] = tot.get(k[5:], 0.0) + v
    mean = lambda key, n: tot[key] / tot[n] if tot.get(n) else None
    return dict(d_after=mean("d_after", "n_after"), w_after=mean("w_after", "n_after"), n_after=tot.get("n_after", 0),
                d_clean=mean("d_clean", "n_clean"), w_clean=mean("w_clean", "n_clean"), n_clean=tot.get("n_clean", 0))


def _p(x, signed=False):
    return "-" if x is None else f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _ci(t, signed=False):
    return f"{_p(t[0], signed)} [{_p(t[1], signed)}, {_p(t[2], signed)}]"


def summary(out, run, teacher="teacher_sft", student="student_sft"):
    """toy.sh's last lines: teacher, student before and after `run`, with 95 % intervals over problems; the paired
    gain over the SFT student and the share of the teacher-student gap it closes. Returns (text, numbers)."""
    t, s, a = (_read(f"{out}/eval_{name}/toy.json") for name in (teacher, student, run))
    k, n = s["metrics"]["k"], s["metrics"]["problems"]
    acc = {name: tuple(r["metrics"][f"avg@{k}{x}"] for x in ("", "_lo", "_hi"))
           for name, r in (("teacher", t), ("student", s), ("after", a))}
    gain = bootstrap([a], [s])
    closed = gain[0] / (acc["teacher"][0] - acc["student"][0]) if acc["teacher"][0] > acc["student"][0] else None
    lines = [f"toy: avg@{k} on {n} held-out problems x {k} samples (T=1, top_p=1), 95% intervals over problems",
             f"  {'teacher':<28} {_ci(acc['teacher'])}",
             f"  {'student after SFT':<28} {_ci(acc['student'])}",
             f"  {'student after ' + run:<28} {_ci(acc['after'])}",
             f"  gain: {_ci(gain, True)} points (paired, as eval.py --compare), "
             f"{'beyond noise' if gain[1] > 0 else 'NOT beyond noise'}; "
             f"{'-' if closed is None else f'{100 * closed:.0f}%'} of the teacher-student gap closed"]
    return "\n".join(lines), dict(acc=acc, gain=gain, closed=closed)


SETTINGS = {  # name: (teacher's run directory, what it shows)
    "A": ("teacher_sft", "the teacher's SFT data has the student's failed calls and recoveries"),
    "B": ("teacher_clean_sft", "the teacher's SFT data has no failed call: after one, the teacher is off its data"),
}


def run_name(setting, algo, seed):
    """The run directory of one cell: GRPO never reads the teacher, so its runs serve both settings."""
    return f"{algo}_seed{seed}" if algo == "grpo" else f"{setting}_{algo}_seed{seed}"


def cells(seeds=(0, 1, 2)):
    """The RL runs of toy.sh table as (run name, teacher, algorithm, seed): GRPO once per seed, the rest per
    setting."""
    out = [(run_name("A", "grpo", x), SETTINGS["A"][0], "grpo", str(x)) for x in seeds]
    return out + [(run_name(s, a, x), SETTINGS[s][0], a, str(x)) for s in SETTINGS for a in ALGOS if a != "grpo"
                  for x in seeds]


def table(out, seeds=(0, 1, 2), student="student_sft"):
    """The comparison table of toy.sh table: per setting and algorithm, the accuracy over seeds with its interval,
    the paired SOD - algorithm difference, the share of eval samples with a failed call and how many of those
    still end right, and d_k / w_k after a failed call vs in clean episodes over all training steps."""
    s = _read(f"{out}/eval_{student}/toy.json")
    k = s["metrics"]["k"]
    lines = [f"toy table: {len(seeds)} seeds (one RL run each) per cell, from the same SFT models; avg@{k} on "
             f"{s['metrics']['problems']} held-out problems, 95% intervals over problems and seeds; "
             "failed/recovered: eval samples; d, w: every training step"]
    for setting, (teacher, what) in SETTINGS.items():
        t = _read(f"{out}/eval_{teacher}/toy.json")
        runs = {a: [_read(f"{out}/eval_{run_name(setting, a, x)}/toy.json") for x in seeds] for a in ALGOS}
        lines += ["", f"setting {setting}: {what}",
                  "| model | acc % | per seed | SOD - this | failed % | recovered % | d after fail / clean | "
                  "w after fail / clean |", "|---|---|---|---|---|---|---|---|",
                  f"| teacher | {_ci(bootstrap([t]))} | | | {_p(failures([t])[0])} | {_p(failures([t])[1])} | | |",
                  f"| student (SFT) | {_ci(bootstrap([s]))} | | {_ci(bootstrap(runs['sod'], [s]), True)} | "
                  f"{_p(failures([s])[0])} | {_p(failures([s])[1])} | | |"]
        for a in ALGOS:
            f = step_failures([f"{out}/{run_name(setting, a, x)}/metrics.jsonl" for x in seeds])
            dd = "-" if a == "grpo" or f["d_after"] is None else f"{f['d_after']:.3f} / {f['d_clean']:.3f}"
            ww = "-" if a == "grpo" or f["w_after"] is None else f"{f['w_after']:.3f} / {f['w_clean']:.3f}"
            per = " ".join(_p(r["metrics"][f"avg@{k}"]) for r in runs[a])
            diff = "" if a == "sod" else _ci(bootstrap(runs["sod"], runs[a]), True)
            fr, rec = failures(runs[a])
            lines.append(f"| + {a}{' (no teacher)' if a == 'grpo' else ''} | {_ci(bootstrap(runs[a]))} | {per} | "
                         f"{diff} | {_p(fr)} | {_p(rec)} | {dd} | {ww} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "summary" and len(args) == 2:
        print(summary(*args)[0])
    elif cmd == "table" and len(args) == 1:
        print(table(args[0]))
    elif cmd == "cells" and not args:  # toy.sh table's RL runs, one per line
        print("\n".join(" ".join(c) for c in cells()))
    elif cmd == "run_name" and len(args) == 3:
        print(run_name(args[0], args[1], int(args[2])))
    else:
        raise SystemExit("usage: python toy.py summary OUT RUN | table OUT | cells | run_name SETTING ALGO SEED")
