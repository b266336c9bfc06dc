"""Trained tokens/s of train_sft's packed micro-batches vs padded ones, on a length mix like the real SFT set.

    python bench/bench_sft.py [--docs 96] [--budget 4096] [--size toy_student]

Conversation lengths are drawn log-normally (median ~1/6 of the budget, a long tail up to the budget), the shape of
Open-AgentRL-SFT-3K's multi-turn trajectories scaled down to CPU sizes. Both modes run the same documents through
forward + backward of the same tiny Qwen3 with train_sft's own collate; the figure is real (non-pad) tokens per
second. A GPU MFU measurement of a Qwen3-0.6B-shaped step is in --gpu (needs CUDA).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import train_sft  # noqa: E402


def run(model, batches):
    t0, real = time.time(), 0
    for rows in batches:
        ids, labels, pos, attn = train_sft.collate(rows)
        out = model(input_ids=ids, position_ids=pos, attention_mask=attn, use_cache=False)
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        real += int((pos > 0).sum()) + sum(len(r) for r in rows)
    return real / (time.time() - t0)


def gpu_mfu(tokens=16384):
    """One FSDP2 + bf16 training step of a Qwen3-0.6B-shaped model (random weights, no download) on one GPU."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    import common
    dist = common.init_dist()
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)
    model = common.wrap_fsdp(Qwen3ForCausalLM(cfg), dist, activation_checkpointing=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), device="cuda")
    for _ in range(4):
        torch.cuda.synchronize()
        t0 = time.time()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        dt = time.time() - t0
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * tokens  # per token, causal attention (fwd+bwd)
    flops = (6 * n_params + attn / 2) * tokens
    peak = 989e12  # H100 SXM dense bf16
    print(f"gpu: {tokens / dt:.0f} tokens/s, MFU {flops / dt / peak:.1%} (peak {peak / 1e12:.0f} TFLOP/s)")
    common.destroy_dist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=96)
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--size", default="toy_student")
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    if args.gpu:
        return gpu_mfu()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(args.budget / 6), 0.8, args.docs), 32, args.budget).astype(int)
    docs = [(torch.randint(3, 700, (n,)).tolist(), [0] * (n // 4) + [1] * (n - n // 4)) for n in lengths]
    model = data.tiny_qwen3(1024, args.size)
    packed = train_sft.micro_batches(docs, args.budget, packing=True)
    padded = train_sft.micro_batches(docs, args.budget, packing=False)
    run(model, packed[:2])  # warm-up
    a, b = run(model, packed), run(model, padded)
    print(f"{args.docs} docs, lengths median {int(np.median(lengths))} max {lengths.max()}, budget {args.budget} "
          f"tokens per micro-batch, model {args.size}")
    print(f"packed: {len(packed)} micro-batches, {a:.0f} tokens/s | padded: {len(padded)} micro-batches, {b:.0f} "
          f"tokens/s | packed / padded = {a / b:.2f}x")


if __name__ == "__main__":
    main()
