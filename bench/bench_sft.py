"""Trained tokens/s of train_sft's packed micro-batches vs padded ones, on a length mix like the real SFT set.

    python bench/bench_sft.py [--docs 96] [--budget 4096] [--size toy_student]      # CPU: packed / padded ratio
    python bench/bench_sft.py --gpu [--tokens 16384]                                # GPU: tokens/s and MFU

Conversation lengths are drawn log-normally (median 1/6 of the budget, a tail up to the budget, a quarter of each
one context), the shape of Open-AgentRL-SFT-3K's multi-turn trajectories scaled down to CPU sizes. Both modes run
the same conversations through forward + backward of the same tiny Qwen3 with train_sft's own micro-batching,
attention and loss (train_sft.micro_batches, set_attention, batch_nll); the figure is trained tokens per second.
--gpu times FSDP2 + bf16 training steps of a Qwen3-0.6B-shaped model (built from its config: random weights, no
download) with activation checkpointing, at --tokens per micro-batch of packed conversations, and reports MFU
against the H100 SXM dense bf16 peak.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import data  # noqa: E402
import train_sft  # noqa: E402


def trained_per_s(model, batches, device, sync=lambda: None):
    sync()
    t0, trained = time.time(), 0
    for rows in batches:
        train_sft.batch_nll(model, rows, device).backward()
        trained += sum(sum(d[1][1:]) for r in rows for d in r)
    sync()
    return trained / (time.time() - t0)


def lengths_like_sft(n, budget, rng):
    return np.clip(rng.lognormal(np.log(budget / 6), 0.8, n), 32, budget).astype(int)


def gpu_mfu(tokens, steps=5):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dist = common.init_dist()
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                      max_position_embeddings=40960)
    model = Qwen3ForCausalLM(cfg)
    train_sft.set_attention(model, dist.device)
    model = common.wrap_fsdp(model, dist, activation_checkpointing=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    n_params = sum(p.numel() for p in model.parameters())  # tied: the lm_head matmul counted once, the lookup not
    rng = np.random.default_rng(0)
    lens = lengths_like_sft(64, tokens, rng)
    docs = [(rng.integers(0, cfg.vocab_size, n).tolist(), [0] * (n // 4) + [1] * (n - n // 4)) for n in lens]
    row = train_sft.pack(docs, tokens)[0]  # the fullest packed row
    n_tok, sq = sum(len(d[0]) for d in row), sum(len(d[0]) ** 2 for d in row)
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.time()
        train_sft.batch_nll(model, [row], dist.device).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.time() - t0)
    dt = min(times[1:])
    # 6 N per token (fwd + bwd), plus causal attention: QK^T and AV, 2 * 2 * n^2 / 2 * heads * head_dim per doc per
    # layer forward, x3 with backward; activation-checkpoint recompute is not counted (the MFU convention)
    flops = 6 * n_params * n_tok + 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * sq
    peak = 989e12
    print(f"gpu: {len(row)} conversations, {n_tok} tokens per micro-batch, {dt:.3f} s per step, "
          f"{n_tok / dt:.0f} tokens/s, MFU {flops / dt / peak:.1%} of {peak / 1e12:.0f} TFLOP/s")
    common.destroy_dist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=96)
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--size", default="toy_student")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--tokens", type=int, default=16384)
    args = ap.parse_args()
    if args.gpu:
        return gpu_mfu(args.tokens)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lens = lengths_like_sft(args.docs, args.budget, rng)
    docs = [(rng.integers(3, 700, n).tolist(), [0] * (n // 4) + [1] * (n - n // 4)) for n in lens]
    model = data.tiny_qwen3(1024, args.size)
    train_sft.set_attention(model, torch.device("cpu"))
    cpu = torch.device("cpu")
    packed = train_sft.micro_batches(docs, args.budget, packing=True)
    padded = train_sft.micro_batches(docs, args.budget, packing=False)
    fill = lambda mbs: sum(lens) / sum(len(r) * max(sum(len(d[0]) for d in x) for x in r) for r in mbs)
    trained_per_s(model, packed[:2], cpu)  # warm-up
    a, b = trained_per_s(model, packed, cpu), trained_per_s(model, padded, cpu)
    print(f"{args.docs} conversations, lengths median {int(np.median(lens))} max {lens.max()}, {args.budget} tokens "
          f"per micro-batch, model {args.size}, {torch.get_num_threads()} threads")
    print(f"packed: {len(packed)} micro-batches ({fill(packed):.0%} real tokens), {a:.0f} trained tokens/s | "
          f"padded: {len(padded)} micro-batches ({fill(padded):.0%} real tokens), {b:.0f} trained tokens/s | "
          f"packed / padded = {a / b:.2f}x")


if __name__ == "__main__":
    main()
