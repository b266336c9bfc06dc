"""Trained tokens/s of train_sft's packed micro-batches vs padded ones, on a length mix like the real SFT set, in one
run (CPU: a tiny model in fp32; --gpu: a Qwen3-0.6B-shaped model in bf16 on one GPU, plus its MFU).

    python bench/bench_sft.py [--docs 96] [--budget 4096] [--size toy_student] [--threads 2]   # CPU
    python bench/bench_sft.py --gpu [--budget 16384]                                           # one GPU

Conversation lengths are drawn log-normally (median 1/6 of the budget, a tail up to the budget, a quarter of each
one context), the shape of Open-AgentRL-SFT-3K's multi-turn trajectories scaled to the budget. Both modes run the
same conversations through forward + backward of the same model with train_sft's own micro-batching, attention and
loss (train_sft.micro_batches, set_attention, batch_nll); the figure is trained tokens per second, after a warm-up
on two packed micro-batches, the best of --rounds interleaved packed-then-padded rounds (on a shared machine other
work only ever slows a round down). The CPU and GPU paths are the same code and differ only in the model (tiny fp32 vs
Qwen3-0.6B's shape in bf16, built from its config: random weights, no download), the device and the budget; the
GPU path also reports the packed run's MFU against the H100 SXM dense bf16 peak (no optimizer step, no FSDP).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
import train_sft  # noqa: E402

H100_BF16 = 989e12  # dense bf16 FLOP/s of an H100 SXM


def throughput(model, batches, device):
    """(trained tokens/s, all tokens/s) of forward + backward over the micro-batches."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0, trained, tokens = time.perf_counter(), 0, 0
    for rows in batches:
        train_sft.batch_nll(model, rows, device).backward()
        trained += sum(sum(d[1][1:]) for r in rows for d in r)
        tokens += sum(len(d[0]) for r in rows for d in r)
    sync()
    dt = time.perf_counter() - t0
    return trained / dt, tokens / dt


def lengths_like_sft(n, budget, rng):
    return np.clip(rng.lognormal(np.log(budget / 6), 0.8, n), 32, budget).astype(int)


def qwen3_06b_shape():
    from transformers import Qwen3Config, Qwen3ForCausalLM
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                                        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                                        head_dim=128, tie_word_embeddings=True, max_position_embeddings=40960))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=96)
    ap.add_argument("--budget", type=int, default=0, help="tokens per micro-batch (default 4096 CPU, 16384 GPU)")
    ap.add_argument("--size", default="toy_student", help="CPU model: a models.TINY_SIZES name")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="packed-then-padded rounds; the best of each is shown")
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no GPU visible to torch")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if args.gpu else "cpu")
    budget = args.budget or (16384 if args.gpu else 4096)
    model = (qwen3_06b_shape().to(device, torch.bfloat16) if args.gpu else models.tiny_qwen3(1024, args.size))
    name = "Qwen3-0.6B shape, bf16" if args.gpu else f"{args.size}, fp32"
    train_sft.set_attention(model, device)
    rng = np.random.default_rng(0)
    lens = lengths_like_sft(args.docs, budget, rng)
    docs = [(rng.integers(3, model.config.vocab_size, n).tolist(), [0] * (n // 4) + [1] * (n - n // 4)) for n in lens]
    packed = train_sft.micro_batches(docs, budget, packing=True)
    padded = train_sft.micro_batches(docs, budget, packing=False)
    fill = lambda mbs: sum(lens) / sum(len(r) * max(sum(len(d[0]) for d in x) for x in r) for r in mbs)
    throughput(model, packed[:2], device)  # warm-up
    runs = [(throughput(model, packed, device), throughput(model, padded, device)) for _ in range(args.rounds)]
    (a, a_all), (b, _) = max(r[0] for r in runs), max(r[1] for r in runs)  # interference only ever slows a round
    print(f"{args.docs} conversations, lengths median {int(np.median(lens))} max {lens.max()}, {budget} tokens per "
          f"micro-batch, model {name}, {device.type}, {torch.get_num_threads()} threads, forward + backward, best of "
          f"{args.rounds} interleaved rounds")
    print(f"packed: {len(packed)} micro-batches ({fill(packed):.0%} real tokens), {a:,.0f} trained tokens/s | "
          f"padded: {len(padded)} micro-batches ({fill(padded):.0%} real tokens), {b:,.0f} trained tokens/s | "
          f"packed / padded = {a / b:.2f}x (real-token fill ratio {fill(packed) / fill(padded):.2f}x)")
    if args.gpu:
        # 6 N per token (fwd + bwd; tied lm_head counted once, the embedding lookup not), plus causal attention:
        # QK^T and AV, 2 * 2 * n^2 / 2 * heads * head_dim per conversation per layer forward, x3 with backward
        cfg, n_params = model.config, sum(p.numel() for p in model.parameters())
        sq = sum(int(n) ** 2 for n in lens) / sum(lens)  # attention FLOPs per token scale with n^2 / n
        flops = 6 * n_params + 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * sq
        print(f"packed MFU {a_all * flops / H100_BF16:.1%} of {H100_BF16 / 1e12:.0f} TFLOP/s ({a_all:.0f} tokens/s)")


if __name__ == "__main__":
    main()
