"""Worker for tests/test_common.py and tests/test_checkpoints.py: a few FSDP2 optimizer steps on a tiny Qwen3 under
`python` or `torchrun`.

    python tests/fsdp_worker.py OUT --steps 3 [--save_at 1] [--resume] [--hang_saving_step 2] [--sgd] [--bf16]
Rank 0 writes OUT/losses.json (the global loss of each step this run took) and OUT/params.pt (the full state dict
after the last step).
"""
import argparse
import dataclasses
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import models  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--steps", type=int, default=1)
ap.add_argument("--save_at", type=int, default=0)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--sgd", action="store_true")  # linear in the gradient: no Adam sign-flips on ~0 gradients
ap.add_argument("--hang_saving_step", type=int, default=0)
ap.add_argument("--bf16", action="store_true")  # a model that came in bf16: checkpoints round it, resume must not
args = ap.parse_args()

dist = common.init_dist("cpu")
torch.use_deterministic_algorithms(True)
tok = models.make_toy_tokenizer()
ckpt = common.latest_checkpoint(args.out) if args.resume else None
if ckpt:
    model, tok = models.load_model(os.path.join(ckpt, "model"))
elif args.bf16:  # a model that comes in bf16 (trained in fp32, written back in bf16)
    base = os.path.join(args.out, "base")
    if dist.is_main:
        models.tiny_qwen3(tok, "tiny", seed=0, dtype=torch.bfloat16).save_pretrained(base)
        tok.save_pretrained(base)
    torch.distributed.barrier()
    model, tok = models.load_model(base)
else:
    model = models.tiny_qwen3(tok, "tiny", seed=0)
model = common.wrap_fsdp(model, dist)
opt = torch.optim.SGD(model.parameters(), lr=1.0) if args.sgd else \
    torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
start = 0
common.set_seed(1234)
if ckpt:
    start = common.load_checkpoint(ckpt, model, opt)["step"]

if args.hang_saving_step:  # simulate a crash in the middle of writing a checkpoint: block inside torch.save
    real_save = torch.save

    def slow_save(obj, path, *a, **k):
        if f"step_{args.hang_saving_step:06d}" in str(path) and str(path).endswith("optimizer.pt"):
            print("HANGING", flush=True)
            import time
            time.sleep(600)
        return real_save(obj, path, *a, **k)
    torch.save = slow_save

losses = []
B, T = 4, 24
for step in range(start + 1, args.steps + 1):
    # The global batch is drawn from the (checkpointed) RNG; each rank trains its slice; the loss is the local token
    # sum over the per-rank share of the global count (FSDP averages gradients), so the world size never changes it.
    x = torch.randint(0, len(tok), (B, T))
    per = B // dist.world_size
    xs = x[dist.rank * per:(dist.rank + 1) * per]
    logits = model(xs).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), xs[:, 1:].reshape(-1),
                                            reduction="sum")
    loss = nll / (B * (T - 1) / dist.world_size)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    losses.append(common.all_reduce_sum(loss.detach().clone()).item() / dist.world_size)
    if step == args.save_at or step == args.hang_saving_step:
        cfg = dataclasses.make_dataclass("Config", [("lr", float, 1e-2)])()
        common.save_checkpoint(args.out, step, model, tok, opt, cfg, {"cursor": step})

sd = common.full_state_dict(model)
if dist.is_main:
    os.makedirs(args.out, exist_ok=True)
    torch.save(sd, os.path.join(args.out, "params.pt"))
    with open(os.path.join(args.out, "losses.json"), "w") as f:
        json.dump(losses, f)
torch.distributed.barrier()
common.destroy_dist()
common.exit_process()
