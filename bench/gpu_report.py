"""Every GPU figure of docs/performance.md in one command, written to gpu_report.md as one table, each row a ratio
against the naive way measured in the same run. Random weights, no network: the built-in toy tokenizer, or Qwen3's real
one when its BPE ranks are already cached (python models.py --fetch_qwen3).

    python bench/gpu_report.py                        # one GPU, ~10 min; --only logprobs,weights,sft,decode,sod
    python bench/gpu_report.py --dry                  # the same code paths at tiny sizes on CPU, seconds

Rows: sod_loss.token_logprobs at V=151,936, hidden 1024, T=16,384 with bf16 weights vs the naive fp32 log_softmax
(peak memory, time; scoring and forward + backward); sod_loss.sod_weights at B=512, T=8,192 vs a per-step loop with
.item() and vs one elementwise pass, eager and compiled; a train_sft step of the Qwen3-0.6B shape under FSDP2 in
bf16 at 4k and 16k tokens per micro-batch (tokens/s, MFU against the H100 SXM dense bf16 peak of 989 TFLOP/s, peak
memory), packed vs padded, activation checkpointing off vs on, compile on vs off; the HF engine's decode tokens/s
at batch 1, 16, 64 vs decoding without a KV cache (and vLLM's vs the HF engine's where vllm is installed); one
train_sod step of the 0.6B shape on the toy task under FSDP2 (nccl on GPU), its phase times.
"""
import argparse
import gc
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_sod_loss import loop_weights, make_batch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
import rollout  # noqa: E402
import sod_loss  # noqa: E402
import train_sft  # noqa: E402
import train_sod  # noqa: E402

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (the MFU convention: no sparsity)
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROWS = []  # (section, case, ours, naive way, ratio)


def row(section, case, ours, naive="—", ratio="—"):
    ROWS.append((section, case, ours, naive, ratio))
    print(f"{section} | {case} | {ours} | {naive} | {ratio}", flush=True)


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, reps=3):
    """(best seconds of reps, peak memory in bytes above what was allocated before, result of the last call).
    CUDA: the allocator's peak; CPU: the resident-set high-water mark (reset through /proc/self/clear_refs)."""
    sync()
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kb("VmRSS") * 1024
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if DEV.type == "cuda" else _status_kb("VmHWM") * 1024
    return best, max(peak - base, 0), out


def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def tokenizer():
    if os.path.exists(models.QWEN3_BPE):
        return models.make_qwen3_tokenizer(), "Qwen3's"
    return models.make_toy_tokenizer(), "the toy"


def shape_model(size, vocab, dtype):
    """A randomly initialised model of `size` (real shapes: always 151,936 rows) built on the device, in `dtype`."""
    with torch.device(DEV):
        return models.tiny_qwen3(vocab, size=size, dtype=dtype)

# -----------------------------------------------------------------------------
# Sections


def section_logprobs(T, H, V, chunk):
    torch.manual_seed(0)
    w = (torch.randn(V, H, device=DEV) * 0.02).to(torch.bfloat16)
    h = torch.randn(1, T, H, device=DEV).to(torch.bfloat16)
    y = torch.randint(0, V, (1, T), device=DEV)
    for train in (False, True):
        def run(naive, train=train):
            hh, ww = h.detach().requires_grad_(train), w.detach().requires_grad_(train)
            with torch.set_grad_enabled(train):
                if naive:
                    out = torch.log_softmax((hh @ ww.T).float(), -1).gather(-1, y[..., None])[..., 0]
                else:
                    out = sod_loss.token_logprobs(hh, ww, y, chunk_size=chunk)
                if train:
                    out.sum().backward()
            return out.detach().float()

        t_n, m_n, ref = measure(lambda: run(True))
        t_o, m_o, got = measure(lambda: run(False))
        assert torch.allclose(got, ref, atol=5e-2), "token_logprobs and the naive log_softmax disagree"
        case = f"{'fwd+bwd' if train else 'fwd'}, T={T}, H={H}, V={V}, bf16 weights"
        row("token_logprobs", case + " (peak memory)", gib(m_o), gib(m_n), f"1/{m_n / max(m_o, 1):.1f}")
        row("token_logprobs", case + " (time)", f"{t_o * 1e3:.1f} ms", f"{t_n * 1e3:.1f} ms", f"{t_n / t_o:.2f}x speed")


def section_weights(B, T, loop_rows):
    s, t, m = make_batch(B, T, 16, DEV)
    t_floor, _, _ = measure(lambda: (s - t).abs() * m, reps=5)
    t_loop, _, ref = measure(lambda: loop_weights(s, t, m, range(loop_rows)), reps=1)
    t_loop *= B / loop_rows  # timed on loop_rows rows, scaled to B
    for compiled in (False, True):
        sod_loss.COMPILE = compiled
        sod_loss.sod_weights(s, t, m)  # warm-up (and compilation)
        t_ours, _, w = measure(lambda: sod_loss.sod_weights(s, t, m), reps=5)
        assert torch.allclose(w[:loop_rows], ref[:loop_rows], rtol=1e-5, atol=1e-6), "loop and vectorised disagree"
        name = "compiled" if compiled else "eager"
        if compiled and sod_loss._compiled is False:
            name = "compiled (compile failed: eager)"
        row("sod_weights", f"{name}, B={B}, T={T} vs per-step loop with .item()", f"{t_ours * 1e3:.2f} ms",
            f"{t_loop * 1e3:.1f} ms", f"{t_loop / t_ours:.0f}x speed")
        row("sod_weights", f"{name}, B={B}, T={T} vs one elementwise pass", f"{t_ours * 1e3:.2f} ms",
            f"{t_floor * 1e3:.2f} ms", f"{t_ours / t_floor:.1f}x the floor")
    sod_loss.COMPILE = False


def free():
    """Release the previous case's models (FSDP modules hold reference cycles) before the next one measures."""
    gc.collect()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()


def sft_step(size, vocab, docs, tokens, packing, compile, ac, dist):
    """Tokens/s, FLOP/s and peak memory of train_sft's forward + backward + optimizer step over `docs`."""
    free()
    model = shape_model(size, vocab, torch.float32)
    train_sft.set_attention(model, dist.device)
    n_params = sum(p.numel() for p in model.parameters())  # tied: the lm_head matmul counted once
    cfg = model.config
    model = common.wrap_fsdp(model, dist, compile=compile, activation_checkpointing=ac)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    mbs = train_sft.micro_batches(docs, tokens, packing)

    def step():
        for rows in mbs:
            train_sft.batch_nll(model, rows, dist.device).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (compilation, allocator)
    dt, peak, _ = measure(step, reps=2)
    n_tok = sum(len(d[0]) for d in docs)
    sq = sum(len(d[0]) ** 2 for d in docs)
    # 6 N per token (fwd + bwd) plus causal attention (QK^T and AV: 6 * layers * heads * head_dim * n^2 per doc with
    # backward); activation-checkpoint recompute is not counted, padding is not useful work
    flops = 6 * n_params * n_tok + 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * sq
    return n_tok / dt, flops / dt, peak


def section_sft(size, vocab, budgets, n_docs, dist):
    rng = np.random.default_rng(0)
    for tokens in budgets:
        lens = np.clip(rng.lognormal(np.log(tokens / 6), 0.8, n_docs), 32, tokens).astype(int)  # like the SFT set
        docs = [(rng.integers(0, vocab, n).tolist(), [0] * (n // 4) + [1] * (n - n // 4)) for n in lens]
        res = {}
        for key in [("packed", False, True), ("padded", False, True), ("packed", False, False), ("packed", True, True)]:
            res[key] = sft_step(size, vocab, docs, tokens, key[0] == "packed", key[1], key[2], dist)

        def fmt(r):
            mfu = f"MFU {r[1] / H100_BF16_PEAK:.1%}" if DEV.type == "cuda" else "MFU n/a on CPU"
            return f"{r[0]:,.0f} tok/s, {mfu}, peak {gib(r[2])}"

        base = res[("packed", False, True)]
        name = f"{size} FSDP2 {'bf16' if DEV.type == 'cuda' else 'fp32'}, {tokens} tokens/micro-batch"
        row("SFT step", f"{name}, packed vs padded (AC on)", fmt(base), fmt(res[("padded", False, True)]),
            f"{base[0] / res[('padded', False, True)][0]:.2f}x tokens/s")
        row("SFT step", f"{name}, AC off vs on (packed)", fmt(res[("packed", False, False)]), fmt(base),
            f"{res[('packed', False, False)][0] / base[0]:.2f}x tokens/s")
        row("SFT step", f"{name}, compile vs eager (packed, AC on)", fmt(res[("packed", True, True)]), fmt(base),
            f"{res[('packed', True, True)][0] / base[0]:.2f}x tokens/s")


def no_cache_decode(model, prompts, new):
    """The naive way: every new token re-runs the whole prefix (no KV cache), greedy."""
    ids = torch.tensor(prompts, device=DEV)
    with torch.no_grad():
        for _ in range(new):
            nxt = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
    return ids


def section_decode(size, vocab, batches, prompt_len, new, tok, tok_name):
    model = shape_model(size, vocab, torch.bfloat16 if DEV.type == "cuda" else torch.float32).eval()
    engine = rollout.HFEngine(model, tok, str(DEV))
    vllm = None
    if DEV.type == "cuda":
        import importlib.util
        if importlib.util.find_spec("vllm"):
            path = tempfile.mkdtemp(prefix="gpu_report_model_")
            model.save_pretrained(path)
            tok.save_pretrained(path)
            vllm = rollout.VLLMEngine(path, tok, gpu_memory_utilization=0.3, max_model_len=prompt_len + new + 16)
    rng = np.random.default_rng(0)
    for b in batches:
        prompts = [rng.integers(0, min(vocab, len(tok)), prompt_len).tolist() for _ in range(b)]
        t_hf, _, outs = measure(lambda p=prompts: engine.generate(p, new, 1.0, 1.0), reps=1)
        n_hf = sum(len(o[0]) for o in outs)
        t_nc, _, _ = measure(lambda p=prompts: no_cache_decode(engine.model, p, new), reps=1)
        row("decode", f"HF engine, batch {b}, prompt {prompt_len}, {new} new tokens ({tok_name} tokenizer)",
            f"{n_hf / t_hf:,.0f} tok/s", f"{b * new / t_nc:,.0f} tok/s (no KV cache)",
            f"{n_hf / t_hf / (b * new / t_nc):.1f}x")
        if vllm is not None:
            t_v, _, outs = measure(lambda p=prompts: vllm.generate(p, new, 1.0, 1.0), reps=1)
            n_v = sum(len(o[0]) for o in outs)
            row("decode", f"vLLM engine, batch {b}", f"{n_v / t_v:,.0f} tok/s", f"{n_hf / t_hf:,.0f} tok/s (HF)",
                f"{n_v / t_v / (n_hf / t_hf):.1f}x")
    if vllm is None:
        row("decode", "vLLM engine", "not installed" if DEV.type == "cuda" else "needs CUDA")


def section_sod(size, vocab, tok, tok_name, dry):
    with tempfile.TemporaryDirectory(prefix="gpu_report_sod_") as d:
        model = models.tiny_qwen3(vocab, size=size, dtype=torch.bfloat16)
        model.save_pretrained(os.path.join(d, "model"))
        tok.save_pretrained(os.path.join(d, "model"))
        del model
        out = os.path.join(d, "run")
        n, resp = (2, 32) if dry else (8, 1024)
        backend = f"{torch.distributed.get_backend()} x{torch.distributed.get_world_size()}"
        train_sod.main([  # its own process group: the same one, torn down at its end (this section runs last)
            "--student", os.path.join(d, "model"), "--teacher", os.path.join(d, "model"), "--data", "toy",
            "--val_bench", "", "--prompts_per_step", str(n), "--group_size", "4", "--mini_batch_prompts", str(n),
            "--max_turns", "4", "--max_response_len", str(resp), "--overlong_buffer", str(resp // 4),
            "--max_steps", "1", "--save_every", "0", "--dump_every", "0", "--out_dir", out,
            "--gpu_memory_utilization", "0.3"])  # vLLM, if any: beside the decode section's instance
        m = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][-1]
    phases = ", ".join(f"{k[5:]} {v:.1f} s" for k, v in m.items() if k.startswith("time/"))
    row("SOD step", f"{size}, toy task, {n} prompts x 4 rollouts of <= {resp} tokens, FSDP2 on {backend} "
        f"({tok_name} tokenizer)", f"{m['step_time']:.1f} s: {phases}")

# -----------------------------------------------------------------------------


SECTIONS = ("logprobs", "weights", "sft", "decode", "sod")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="tiny sizes on CPU: checks the code paths in seconds")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    ap.add_argument("--out", default="gpu_report.md")
    args = ap.parse_args()
    global DEV
    if args.dry:
        DEV = torch.device("cpu")
    elif DEV.type != "cuda":
        raise SystemExit("gpu_report: no GPU visible to torch; --dry runs the same code paths on CPU")
    only = args.only.split(",")
    if set(only) - set(SECTIONS):
        raise SystemExit(f"gpu_report: --only takes {', '.join(SECTIONS)}")
    dist = common.init_dist("cuda" if DEV.type == "cuda" else "cpu")
    # dry: the toy tokenizer and a tiny model with its 1,024-row vocabulary; else the 0.6B shape (151,936 rows)
    tok, tok_name = (models.make_toy_tokenizer(), "the toy") if args.dry else tokenizer()
    size, vocab = ("tiny", len(tok)) if args.dry else ("qwen3-0.6b", 151936)
    t0 = time.time()
    if "logprobs" in only:
        section_logprobs(*((256, 64, 4096, 64) if args.dry else (16384, 1024, 151936, 1024)))
    if "weights" in only:
        section_weights(*((8, 256, 4) if args.dry else (512, 8192, 32)))
    if "sft" in only:
        section_sft(size, vocab, (128, 256) if args.dry else (4096, 16384), 6 if args.dry else 24, dist)
    if "decode" in only:
        section_decode(size, vocab, (1, 4) if args.dry else (1, 16, 64), 32 if args.dry else 512,
                       4 if args.dry else 128, tok, tok_name)
    free()  # the decode section's models
    if "sod" in only:
        section_sod(size, vocab, tok, tok_name, args.dry)
    where = torch.cuda.get_device_name() if DEV.type == "cuda" else "CPU (dry run: tiny sizes, figures not meaningful)"
    with open(args.out, "w") as f:
        f.write(f"# GPU report\n\n{where}; torch {torch.__version__}; {time.time() - t0:.0f} s; MFU against "
                f"{H100_BF16_PEAK / 1e12:.0f} TFLOP/s (H100 SXM dense bf16).\n\n"
                "| section | case | ours | naive way | ratio |\n|---|---|---|---|---|\n"
                + "".join(f"| {' | '.join(map(str, r))} |\n" for r in ROWS))
    print(f"gpu_report: {len(ROWS)} rows -> {args.out} ({time.time() - t0:.0f} s)")
    common.destroy_dist()


if __name__ == "__main__":
    main()
