"""What a person looks at: the trajectory pages of a training run, its curves, evaluation reports and comparisons.

The training and evaluation scripts call these; nothing here changes a number.

    python train_sod.py --plot out/toy/sod      # curves of a run -> out/toy/sod/curves.png
"""

import html
import json
import os

import numpy as np

# -----------------------------------------------------------------------------
# Training runs: sample trajectories (JSONL + HTML), curves


def dump(out_dir, step, eps, tok, grpo_adv, old, tea, stats, problems=None):
    """Write out_dir/samples/step_XXXXXX.{jsonl,html} for the given episodes (rank 0's first few); `problems[i]` is
    episode i's problem (its question and ground truth head the episode)."""
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    rows = []
    for i in range(len(eps)):
        steps = stats["row"] == i
        p = problems[i] if problems else {}
        rows.append((float(grpo_adv[i]), {"o": (tea[i] - old[i]).tolist(), "d": stats["d"][steps].tolist(),
                                          "w": stats["w"][steps].tolist(), "ground_truth": p.get("ground_truth"),
                                          "question": p.get("question") or _question(p)}))
    base = os.path.join(out_dir, "samples", f"step_{step:06d}")
    with open(base + ".jsonl", "w") as f:
        for e, (a, st) in zip(eps, rows):
            f.write(json.dumps({"step": step, "question": st["question"], "ground_truth": st["ground_truth"],
                                "score": e.score, "acc": bool(e.acc), "pred": e.pred, "advantage": a,
                                "num_turns": e.num_turns, "num_tool_calls": e.num_tool_calls, "finish": e.finish,
                                "first_failure": _first_failure(e), "text": e.response_text, "turns": e.turns,
                                "d": st["d"], "w": st["w"]}, default=str) + "\n")
    with open(base + ".html", "w") as f:
        f.write(html_page(step, eps, tok, rows))


def _question(problem):
    msgs = problem.get("prompt_messages") or [{}]
    return msgs[-1].get("content")


def _first_failure(ep):
    """The first assistant turn whose tool call failed (any status but "ok"), or None (train_sod.first_failure)."""
    return next((k for k, t in enumerate(ep.turns) if any(s != "ok" for s in t.get("status", []))), None)


def html_page(step, episodes, tok, rows):
    """A self-contained page: per episode its question and ground truth, each token coloured by τ − s (red: the
    teacher finds it unlikely), each assistant step boxed with its d_k and w_k, tool outputs in grey; a failed tool
    call's output is red and the steps after it are boxed in orange, their d_k / w_k in bold (OPD's failure mode:
    the teacher scores steps that follow an error it may never have seen; SOD's w_k < 1 turns them down)."""
    style = ("body{font:13px monospace;max-width:1100px;margin:auto} span{white-space:pre-wrap} .c{color:#888}"
             ".s{border:1px solid #36c;margin:3px 0;padding:3px;border-radius:4px} .l{color:#36c;font-size:11px}"
             ".a{border:2px solid #e80} .a .l{color:#c60;font-weight:bold} .f{color:#c00;background:#fee}"
             ".ep{border-top:3px solid #000;margin-top:18px} .q{background:#eef;padding:3px}")
    parts = [f"<html><head><meta charset='utf-8'><title>step {step}</title><style>{style}</style></head><body>"
             f"<h2>step {step}</h2><p>token colour: τ−s (teacher minus student log-prob of the sampled token); red: "
             "the teacher finds the token unlikely. Grey: tool output (not trained); <span class='f'>red: a failed "
             "tool call's output</span>; orange boxes: the steps after an episode's first failed call, where the "
             "teacher reads an error (d_k: the step's mean |τ−s|; w_k: SOD's step weight, below 1 when the step "
             "drifted further from the teacher than the first).</p>"]
    for ep, (adv, st) in zip(episodes, rows):
        first = _first_failure(ep)
        after = [(d, w) for k, (d, w) in enumerate(zip(st["d"], st["w"])) if first is not None and k > first]
        md, mw = (sum(x[j] for x in after) / max(len(after), 1) for j in (0, 1))
        note = "no failed tool call" if first is None else (
            f"first failed call in step {first + 1}; {len(after)} step(s) after it, mean d {md:.3f}, mean w {mw:.3f}")
        parts.append(f"<div class='ep'><div class='q'>{html.escape(str(st.get('question')))} · ground truth "
                     f"<b>{html.escape(str(st.get('ground_truth')))}</b></div><b>score {ep.score:+.2f} acc "
                     f"{int(bool(ep.acc))} pred {html.escape(str(ep.pred))}</b> · turns {ep.num_turns} · tool calls "
                     f"{ep.num_tool_calls} · errors {ep.tool_errors} · finish {ep.finish} · advantage {adv:+.3f} · "
                     f"{note}</div>")
        o = st["o"]
        t, k, n = len(ep.prompt_ids), 0, len(ep.ids)
        while t < n:
            masked = ep.mask[t]
            e = t
            while e < n and ep.mask[e] == masked:
                e += 1
            if masked:
                spans = []
                for j in range(t, e):
                    v = float(o[j - 1]) if j > 0 else 0.0
                    a = min(abs(v) / 4.0, 1.0)
                    rgb = f"220,40,40,{a:.2f}" if v < 0 else f"40,160,40,{a:.2f}"
                    spans.append(f"<span style='background:rgba({rgb})' title='τ−s={v:+.3f}'>"
                                 f"{html.escape(tok.decode([ep.ids[j]]))}</span>")
                d, w = (st["d"][k], st["w"][k]) if k < len(st["d"]) else (float("nan"), float("nan"))
                tag = " (after a failed call)" if first is not None and k > first else ""
                parts.append(f"<div class='s{' a' if tag else ''}'><div class='l'>step {k + 1}{tag}: d={d:.4f} "
                             f"w={w:.3f}</div>{''.join(spans)}</div>")
                k += 1
            else:
                failed = 0 < k <= len(ep.turns) and any(s != "ok" for s in ep.turns[k - 1].get("status", []))
                parts.append(f"<div class='{'c f' if failed else 'c'}'><span>{html.escape(tok.decode(ep.ids[t:e]))}"
                             "</span></div>")
            t = e
    return "\n".join(parts + ["</body></html>"])


def plot(out_dir):
    """Training curves from out_dir/metrics.jsonl to out_dir/curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"plot: no metrics.jsonl in {out_dir}")
    rows = [json.loads(line) for line in open(path)]
    keys = ["reward", "acc", "val/acc", "loss", "w_mean", "w_lt_half", "d_mean", "tool_calls", "tool_error_rate",
            "response_len", "mismatch", "clip_frac"]
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:
        raise SystemExit(f"plot: {path} holds no training step yet")
    fig, axes = plt.subplots((len(keys) + 3) // 4, 4, figsize=(16, 3.2 * ((len(keys) + 3) // 4) + 0.4),
                             squeeze=False, layout="constrained")
    fig.suptitle(os.path.normpath(out_dir))  # the run, so that two runs' curves side by side are told apart
    for ax, k in zip(axes.flat, keys):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
        ax.set(title=k, xlabel="step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.savefig(os.path.join(out_dir, "curves.png"), dpi=100)
    print(f"plot: {os.path.join(out_dir, 'curves.png')}")



# -----------------------------------------------------------------------------
# Evaluations: JSON (everything), Markdown (for people), PNG (the shape of the results)


def pct(x):
    return f"{100 * x:.2f}"


def write_reports(out_path, knobs, metrics, samples, curve, rates):
    """<out_path>.json (knobs, metrics, the pass@k curve, per-sample results without responses), .md, .png;
    `curve` is pass@1..k, `rates` each problem's success rate."""
    k = metrics["k"]
    slim = [{key: v for key, v in r.items() if key not in ("response_text", "key", "psha")} for r in samples]
    with open(out_path + ".json", "w") as f:
        json.dump({"knobs": knobs, "metrics": metrics, "pass_curve": curve, "samples": slim}, f, indent=1)
    lines = [f"# {knobs.get('bench', 'eval')}: {knobs.get('model', '')}", "",
             f"{metrics['problems']} problems x {k} samples; 95% percentile bootstrap CIs over problems.", "",
             f"Protocol `{knobs.get('protocol')}` (tool I/O), grader `{knobs.get('grader')}`, tool-use shaping "
             f"`{knobs.get('shaping')}`; {knobs.get('dropped_long_prompts', 0)} prompts dropped as too long.", "",
             "| metric | % | 95% CI |", "|---|---|---|"]
    lines += [f"| {m}@{k} | {pct(metrics[f'{m}@{k}'])} | [{pct(metrics[f'{m}@{k}_lo'])}, "
              f"{pct(metrics[f'{m}@{k}_hi'])}] |" for m in ("avg", "pass", "maj")]
    lines += ["", "| pass@j | " + " | ".join(str(j) for j in range(1, k + 1)) + " |", "|---" * (k + 1) + "|",
              "| % | " + " | ".join(pct(v) for v in curve) + " |", "", "| TIR statistic | value |", "|---|---|"]
    lines += [f"| {name} | {metrics[name]:.4g} |" for name in ("tool_calls", "tool_error_rate", "tool_timeout_rate",
                                                                "turns", "response_tokens", "truncated", "no_answer")]
    lines += ["", "| knob | value |", "|---|---|"] + [f"| {key} | `{v}` |" for key, v in knobs.items()]
    with open(out_path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in headless jobs
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.hist(rates, bins=(np.arange(k + 2) - 0.5) / k, edgecolor="black")
    ax1.set(xlabel=f"per-problem success rate ({k} samples)", ylabel="problems", title=knobs.get("bench", ""))
    ax2.plot(range(1, k + 1), curve, marker="o")
    ax2.set(xlabel="k", ylabel="pass@k", xscale="log", ylim=(0, 1), title=f"avg@{k} = {pct(metrics[f'avg@{k}'])}%")
    fig.savefig(out_path + ".png", dpi=110)


def format_compare(out, a, b):
    s = (f"compare on {out['problems']} shared problems (only in A: {out['only_a']}, only in B: {out['only_b']})\n"
         f"  A {a}: {pct(out['a'])}%\n  B {b}: {pct(out['b'])}%\n"
         f"  B - A: {pct(out['diff'])} points, 95% paired bootstrap CI [{pct(out['diff_lo'])}, {pct(out['diff_hi'])}]")
    return s + "".join(f"\n  knob {key}: {va!r} vs {vb!r}" for key, (va, vb) in out["knobs_that_differ"].items())
