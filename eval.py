"""Evaluate a model on the paper's benchmarks with the training agent loop: avg@k, pass@k, maj@k with bootstrap CIs.

Every problem is sampled k times through the same multi-turn tool loop (rollout.py) and graders (reward.py) as
training, under one protocol (docs/fidelity.md): "paper" (default: the original recipe's tool I/O, strict grader and
eval settings: prompts over 4,096 tokens dropped, k=32, T=1.0, top_p=0.6, 20,480 tokens, 16 turns) or "clean". avg@k is
the paper's metric (mean accuracy over all samples); pass@k is the unbiased estimator of Chen et al. (2021); maj@k
votes over canonicalised answers. Each comes with a percentile bootstrap CI over problems. Per-sample results are
appended to a JSONL cache as they finish, so a killed run resumes where it stopped; the cache key holds every
sampling knob, so changing one never reuses stale samples.

    python eval.py --bench toy --model toy:tiny --k 2 --limit 4 --max_response_len 64 --protocol clean   # CPU smoke
    python eval.py --bench aime25 --model youngzhong/SOD-0.6B                                # 1 GPU, vLLM, avg@32
    python eval.py --bench gpqa_diamond --model out/sod/step_000100/model --k 8 --limit 50
    python eval.py --compare out/eval/a/aime25.json out/eval/b/aime25.json                   # paired difference

Outputs (in --out_dir): <bench>.json (knobs, metrics, pass@k curve, per-sample results), <bench>.md (report),
<bench>.png (per-problem success rates, pass@k curve), <bench>.samples.jsonl (the resumable cache with responses).
"""

import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

import common
import data
import models
import report
import reward
import rollout
import sandbox
from tools import protocol_of, tool_protocol

BENCHES = ("aime24", "aime25", "gpqa_diamond", "livecodebench", "toy")

# -----------------------------------------------------------------------------
# Metrics: pure functions of per-sample records {problem_id, sample, acc, pred, num_tool_calls, ...}


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k), as the product
    1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials (stable for n in the thousands)."""
    assert 0 <= c <= n and 1 <= k <= n, (n, c, k)
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def canonical_answer(pred):
    """Normalise an extracted answer so that spellings of one value vote together: strip $, spaces, \\text{},
    \\left/\\right and a trailing period; \\dfrac -> \\frac; numbers to their shortest decimal form ("1,000",
    "1000.0" -> "1000"). None (no answer) stays None."""
    if pred is None:
        return None
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", str(pred))
    s = re.sub(r"\\left|\\right|\\[,;:!]|\\displaystyle|\$|\s+", "", s).rstrip(".")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", s):
        try:
            d = Decimal(s)
            s = str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")
        except InvalidOperation:
            pass
    return s or None


def majority_vote(records):
    """maj@k for one problem: the most frequent canonical answer among the samples that gave one; a tie goes to the
    answer that appeared first in sample order (lowest sample index), so the vote is deterministic and does not
    depend on batching or resume order. Returns (answer, correct); correct is the grade of that answer's first
    sample. No answer at all -> (None, False)."""
    records = sorted(records, key=lambda r: r["sample"])
    answers = [canonical_answer(r["pred"]) for r in records]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, False
    best = max(counts.values())
    winner = next(a for a in answers if counts.get(a) == best)
    return winner, bool(records[answers.index(winner)]["acc"])


def bootstrap_ci(values, n_boot=1000, seed=0, level=0.95):
    """Percentile bootstrap CI of the mean of per-problem values, resampling problems with replacement (the
    benchmark read as a sample of its problem population). Seeded, so a report is reproducible."""
    v = np.asarray(values, dtype=np.float64)
    assert v.ndim == 1 and len(v) > 0
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def group_by_problem(samples):
    """{problem_id: records sorted by sample index}, problems in first-seen order."""
    groups = {}
    for r in samples:
        groups.setdefault(r["problem_id"], []).append(r)
    return {pid: sorted(rs, key=lambda r: r["sample"]) for pid, rs in groups.items()}


def compute_metrics(samples, n_boot=1000, seed=0):
    """Flat dict of scalars: avg@k, pass@k, maj@k (each with _lo/_hi bootstrap bounds) and TIR statistics."""
    groups = group_by_problem(samples)
    n = {len(rs) for rs in groups.values()}
    assert len(n) == 1, f"every problem needs the same number of samples, got {sorted(n)}"
    k = n.pop()
    correct = [sum(bool(r["acc"]) for r in rs) for rs in groups.values()]
    per_problem = {"avg": [c / k for c in correct], "pass": [pass_at_k(k, c, k) for c in correct],
                   "maj": [float(majority_vote(rs)[1]) for rs in groups.values()]}
    out = {"problems": len(groups), "k": k}
    for name, vals in per_problem.items():
        lo, hi = bootstrap_ci(vals, n_boot, seed)
        out |= {f"{name}@{k}": float(np.mean(vals)), f"{name}@{k}_lo": lo, f"{name}@{k}_hi": hi}
    calls = sum(r["num_tool_calls"] for r in samples)
    out |= {  # rates per tool call; the rest per sample (one attempt at one problem)
        "tool_calls": calls / len(samples),
        "tool_error_rate": sum(r["tool_errors"] for r in samples) / max(calls, 1),
        "tool_timeout_rate": sum(r["tool_timeouts"] for r in samples) / max(calls, 1),
        "turns": float(np.mean([r["num_turns"] for r in samples])),
        "response_tokens": float(np.mean([r["response_len"] for r in samples])),
        "truncated": float(np.mean([bool(r["overlong"]) for r in samples])),
        "no_answer": float(np.mean([r["pred"] is None for r in samples])),
    }
    return out


def pass_curve(samples):
    """[pass@1, ..., pass@k] averaged over problems (pass@1 equals avg@k)."""
    groups = group_by_problem(samples)
    k = len(next(iter(groups.values())))
    correct = [sum(bool(r["acc"]) for r in rs) for rs in groups.values()]
    return [float(np.mean([pass_at_k(k, c, j) for c in correct])) for j in range(1, k + 1)]


def compare_runs(path_a, path_b, n_boot=1000, seed=0):
    """Paired comparison of two result JSONs on the problems they share: mean of per-problem (B - A) success
    rates with a paired bootstrap CI (both runs resampled with the same problem indices)."""
    runs = []
    for path in (path_a, path_b):
        if not os.path.isfile(path):
            raise SystemExit(f"compare: no such result file: {path}")
        with open(path) as f:
            runs.append(json.load(f))
    rates = [{pid: float(np.mean([bool(r["acc"]) for r in rs])) for pid, rs in group_by_problem(run["samples"]).items()}
             for run in runs]
    shared = [pid for pid in rates[0] if pid in rates[1]]
    if not shared:
        raise SystemExit(f"compare: {path_a} and {path_b} have no problem in common")
    a, b = np.array([rates[0][p] for p in shared]), np.array([rates[1][p] for p in shared])
    lo, hi = bootstrap_ci(b - a, n_boot, seed)
    knobs_a, knobs_b = runs[0]["knobs"], runs[1]["knobs"]
    differ = {key: (knobs_a.get(key), knobs_b.get(key)) for key in sorted(set(knobs_a) | set(knobs_b))
              if knobs_a.get(key) != knobs_b.get(key)}
    return {"problems": len(shared), "only_a": len(rates[0]) - len(shared), "only_b": len(rates[1]) - len(shared),
            "a": float(a.mean()), "b": float(b.mean()), "diff": float((b - a).mean()), "diff_lo": lo, "diff_hi": hi,
            "knobs_that_differ": differ}

# -----------------------------------------------------------------------------
# Sampling with a resumable per-sample cache


def fingerprint(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_cache(path, key):
    """{(problem_id, sample): record} of the cached samples made with these knobs. A torn last line (a run killed
    mid-write) is skipped; its sample is simply made again."""
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("key") == key:
                    done[(r["problem_id"], r["sample"])] = r
    return done


def prompt_ids(tokenizer, problem, tools=True):
    """The prompt's ids: the chat template with the problem's tool schema (without it when tools=False)."""
    return tokenizer.apply_chat_template(problem["prompt_messages"], tools=problem["tools"] if tools else None,
                                         add_generation_prompt=True, tokenize=True, return_dict=False)


def drop_long_prompts(tokenizer, problems, max_len):
    """(kept problems, number dropped): prompts longer than max_len tokens, measured as the original's filter does
    (verl/utils/dataset/rl_dataset.py, maybe_filter_out_long_prompts: the chat template without the tool block)."""
    kept = [p for p in problems if len(prompt_ids(tokenizer, p, tools=False)) <= max_len]
    return kept, len(problems) - len(kept)


def grade(problem, j, ep, max_response_len, execute, grader, shaping, overlong_buffer=1024):
    """One sample's record: the grade from the training reward, the TIR counters and the response itself."""
    s = reward.compute_score(problem["source"], ep.response_text, problem["ground_truth"], ep.num_turns,
                             ep.response_len, max_response_len, overlong_buffer, run=execute, grader=grader,
                             shaping=shaping, extra_info=problem.get("extra_info"))
    return dict(problem_id=problem["id"], sample=j, acc=bool(s["acc"]), score=float(s["score"]), pred=s["pred"],
                num_turns=ep.num_turns, num_tool_calls=ep.num_tool_calls, tool_errors=ep.tool_errors,
                tool_timeouts=ep.tool_timeouts, response_len=ep.response_len, overlong=bool(ep.overlong),
                finish=ep.finish, response_text=ep.response_text)


def evaluate(engine, tokenizer, problems, k, *, temperature=1.0, top_p=0.6, max_response_len=20480, max_turns=16,
             tools=None, grader="strict", shaping="row", overlong_buffer=1024, mode="continuous", batch_size=256,
             seed=0, execute=None, n_boot=1000, out_path=None, meta=None, progress=True):
    """Sample every problem k times through the agent loop, grade, and return compute_metrics' flat dict.
    With out_path (a path stem), samples are cached in <stem>.samples.jsonl as they finish (finished ones are
    skipped on restart) and <stem>.json / .md / .png are written; without it nothing touches the disk. `meta`
    adds run knobs (model, bench, data, backend, ...) to the cache key and the report. The global RNG is left as
    it was, so a training loop that calls this stays reproducible. `tools` is a tools.ToolProtocol (None = the
    paper's); `grader` and `shaping` are reward.compute_score's."""
    import torch
    from tqdm import tqdm

    tools = tools or tool_protocol("paper")
    knobs = dict(meta or {}, protocol=tools.name, tools=vars(tools), grader=grader, shaping=shaping,
                 overlong_buffer=overlong_buffer, temperature=temperature, top_p=top_p,
                 max_response_len=max_response_len, max_turns=max_turns, rollout_mode=mode, seed=seed)
    key = fingerprint(knobs)  # k and the problem list are not in it: more samples or problems extend a cache
    knobs |= {"k": k, "problems": len(problems), "data_sha": fingerprint([(p["id"], p["prompt_messages"],
                                                                           p["ground_truth"]) for p in problems])}
    cache = out_path + ".samples.jsonl" if out_path else None
    psha = {p["id"]: fingerprint([p["prompt_messages"], p["ground_truth"]]) for p in problems}
    done = {ij: r for ij, r in (load_cache(cache, key) if cache else {}).items() if psha.get(ij[0]) == r["psha"]}
    todo = [(p, j) for p in problems for j in range(k) if (p["id"], j) not in done]
    ids = {p["id"]: prompt_ids(tokenizer, p) for p in problems}
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    bar = tqdm(total=len(problems) * k, initial=len(problems) * k - len(todo), desc="eval", unit="sample",
               disable=not progress, dynamic_ncols=True)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []  # fork only the GPU we sample on
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            eps = rollout.rollout(engine, tokenizer, [ids[p["id"]] for p, _ in chunk], max_turns=max_turns,
                                  max_response_len=max_response_len, temperature=temperature, top_p=top_p,
                                  execute=execute, tools=tools, mode=mode)
            recs = [grade(p, j, ep, max_response_len, execute, grader, shaping, overlong_buffer)
                    | {"key": key, "psha": psha[p["id"]]} for (p, j), ep in zip(chunk, eps, strict=True)]
            if cache:
                with open(cache, "a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in recs)
            done |= {(r["problem_id"], r["sample"]): r for r in recs}
            bar.update(len(chunk))
            bar.set_postfix(acc=f"{np.mean([r['acc'] for r in done.values()]):.3f}")
    bar.close()
    samples = [done[(p["id"], j)] for p in problems for j in range(k)]
    metrics = compute_metrics(samples, n_boot, seed)
    if out_path:
        report.write_reports(out_path, knobs, metrics, samples, pass_curve(samples),
                             [np.mean([r["acc"] for r in rs]) for rs in group_by_problem(samples).values()])
    return metrics

# -----------------------------------------------------------------------------


@dataclass
class Config:
    bench: str = "aime25"  # one of BENCHES
    model: str = ""  # HF model dir (e.g. out/sod/step_000100/model), a run dir (its latest step), Hub id, or toy:<size>
    data: str = ""  # benchmark data: local parquet/jsonl or Hub dataset; "" = the paper's Gen-Verse/Open-AgentRL-Eval
    k: int = 32  # samples per problem (avg@k, pass@k, maj@k)
    temperature: float = 1.0  # sampling temperature (paper: 1.0)
    top_p: float = 0.6  # nucleus sampling (paper: 0.6)
    max_response_len: int = 20480  # tokens per episode after the prompt, tool responses included (paper: 20480)
    max_turns: int = 16  # assistant turns per episode (paper: 16)
    max_prompt_len: int = 4096  # longer prompts are dropped and counted (paper's eval scripts: 4096)
    protocol: str = ""  # paper (original tool I/O and grading) | clean (docs/fidelity.md); "" = paper, clean for toy
    grader: str = ""  # strict | normalized | math_verify; "" = the protocol's (paper: strict, clean: normalized)
    shaping: str = ""  # tool-use shaping of wrong answers: row | turns | none; "" = the protocol's (reward.py)
    max_obs_chars: int = 0  # tool output shown per call; 0 = the protocol's (paper: 256, clean: 2048)
    tool_timeout: float = 0.0  # seconds per tool call; 0 = the protocol's (paper: 60, clean: 10)
    tool_max_calls: int = -1  # tool calls run per assistant turn; -1 = the protocol's (paper: 1, clean: 0 = all)
    tool_memory_mb: int = 0  # memory per tool call; 0 = the protocol's (2048)
    overlong_buffer: int = -1  # DAPO overlong buffer of the score; -1 = the original's (livecodebench 4096, else 1024)
    rollout_mode: str = "continuous"  # continuous (no per-turn barrier) | sync (turn by turn)
    backend: str = "auto"  # auto (vllm on GPU when installed, else hf) | hf | vllm
    gpu_memory_utilization: float = 0.75  # vLLM's share of GPU memory
    batch_size: int = 256  # episodes per rollout call (and per cache write)
    limit: int = 0  # first N problems only (0 = all)
    seed: int = 0  # sampling seed and bootstrap seed
    n_boot: int = 1000  # bootstrap resamples for the CIs
    sandbox: str = "local"  # code executor: local (our sandbox) or a SandboxFusion URL
    out_dir: str = ""  # "" = out/eval/<model slug>
    threads: int = 0  # CPU intra-op threads; 0 = the cores idle at start (common.set_threads)


def model_files(path):
    """Names and sizes of the model directory's files (a cheap fingerprint of which weights were evaluated); a Hub id
    or toy:<size> as it is."""
    if not os.path.isdir(path):
        return path
    return {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}


def make_engine(cfg, path):
    """(engine, tokenizer, backend name); vLLM loads the weights itself, the HF engine from models.load_model."""
    import importlib.util

    import torch
    backend = cfg.backend
    if backend == "auto":
        backend = "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
    if backend == "vllm":
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(path)
        return rollout.make_engine("vllm", path, tok, seed=cfg.seed, gpu_memory_utilization=cfg.gpu_memory_utilization,
                                   max_model_len=32768), tok, backend
    model, tok = models.load_model(path)
    return rollout.make_engine("hf", path, tok, model=model), tok, backend


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pair = None
    if "--compare" in argv:  # two positional paths, so take them out before the key=value parser sees them
        i = argv.index("--compare")
        pair, argv = argv[i + 1:i + 3], argv[:i] + argv[i + 3:]
        if len(pair) != 2 or any(p.startswith("--") for p in pair):
            raise SystemExit("usage: python eval.py --compare RUN_A.json RUN_B.json [--n_boot N] [--seed S]")
    cfg = common.parse_config(Config, argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("eval: uses one GPU; under torchrun every rank would evaluate the same problems. Run "
                         "`python eval.py ...`, one process per benchmark or model, each with its own "
                         "CUDA_VISIBLE_DEVICES")
    if pair:
        out = compare_runs(*pair, cfg.n_boot, cfg.seed)
        print(report.format_compare(out, *pair))
        return out
    if cfg.bench not in BENCHES:
        raise SystemExit(f"eval: unknown --bench {cfg.bench!r}; choose one of {', '.join(BENCHES)}")
    if not cfg.model:
        raise SystemExit("eval: --model is required (a HF model directory, a run directory, a Hub id or toy:tiny)")
    cfg.protocol = cfg.protocol or ("clean" if cfg.bench == "toy" else "paper")
    if cfg.overlong_buffer < 0:
        cfg.overlong_buffer = 4096 if cfg.bench == "livecodebench" else 1024
    common.print_config(cfg)
    common.set_threads(cfg.threads)
    proto = protocol_of(cfg)
    grading = reward.grading(cfg.protocol, cfg.grader, cfg.shaping)
    problems = data.load_eval_data(cfg.bench, cfg.data or data.EVAL_REPO)
    path = models.resolve_model_path(cfg.model)
    engine, tokenizer, backend = make_engine(cfg, path)
    problems, dropped = drop_long_prompts(tokenizer, problems, cfg.max_prompt_len)
    total, problems = len(problems), problems[:cfg.limit] if cfg.limit > 0 else problems
    print(f"eval: {cfg.bench}: {len(problems)}{f' of {total}' if len(problems) < total else ''} problems ({dropped} "
          f"dropped as longer than {cfg.max_prompt_len} tokens); protocol {proto.name}, grader {grading['grader']}, "
          f"shaping {grading['shaping']}")
    out_dir = cfg.out_dir or os.path.join("out", "eval", re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.model).strip("_."))
    meta = dict(bench=cfg.bench, data=cfg.data or "default", model=cfg.model, model_files=model_files(path),
                backend=backend, sandbox=cfg.sandbox, max_prompt_len=cfg.max_prompt_len, dropped_long_prompts=dropped)
    metrics = evaluate(engine, tokenizer, problems, cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                       max_response_len=cfg.max_response_len, max_turns=cfg.max_turns, tools=proto,
                       overlong_buffer=cfg.overlong_buffer, mode=cfg.rollout_mode, batch_size=cfg.batch_size,
                       seed=cfg.seed,
                       execute=sandbox.make_executor(cfg.sandbox, proto.memory_mb), n_boot=cfg.n_boot,
                       out_path=os.path.join(out_dir, cfg.bench), meta=meta, **grading)
    k = cfg.k
    print(" | ".join(f"{m}@{k} {report.pct(metrics[f'{m}@{k}'])} [{report.pct(metrics[f'{m}@{k}_lo'])}, "
                     f"{report.pct(metrics[f'{m}@{k}_hi'])}]" for m in ("avg", "pass", "maj"))
          + f" | tool calls {metrics['tool_calls']:.2f}, truncated {report.pct(metrics['truncated'])}% -> {out_dir}")
    return metrics


if __name__ == "__main__":
    main()
