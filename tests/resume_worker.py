"""Worker for tests/test_resume.py: an interrupted run, its resumption and the uninterrupted run, in one process group,
on a tiny Qwen3 under FSDP2 with AdamW. `run(out)` in a process (tests call it for one process) or:

    torchrun --nproc_per_node=2 tests/resume_worker.py OUT

Each step's loss depends on every RNG a trainer uses (python `random` picks the rows, torch masks the targets, numpy
scales the loss) and on the data cursor (the slice of a fixed dataset the step reads), so the update after a resume
equals the uninterrupted run's only if the checkpoint brings back the Adam moments, the optimizer's param-group
settings, the cursor and all three RNG streams. The resumed optimizer is built with OTHER settings (lr, betas,
weight decay, eps) than the run that saved, and the resumed process starts from other RNG states: load_checkpoint
must restore the saved ones. A control resumes the weights, RNG and cursor but starts Adam afresh: its update must
differ clearly, or the comparison could not see lost moments.

Rank 0 writes OUT/result.json: the saved and the restored param groups, the largest difference between the saved and
the restored optimizer state (per key), the largest difference between the uninterrupted run's weights after the
last step and the resumed run's (and the control's), and the cursor.
"""
import dataclasses
import json
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import models  # noqa: E402

SAVED = dict(lr=3e-2, betas=(0.8, 0.95), weight_decay=0.1, eps=1e-7)  # the run that saves
OTHER = dict(lr=1e-4, betas=(0.5, 0.6), weight_decay=0.0, eps=1e-3)  # what a resuming script builds
B, T, ROWS = 4, 16, 64


def full_optim_state(model, opt):
    """The whole optimizer state on rank 0 ({} elsewhere), copied: the live tensors go on changing."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    sd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {p: {k: torch.as_tensor(v).detach().clone() for k, v in st.items()} for p, st in sd.get("state", {}).items()}


def groups(opt):
    return [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items() if k != "params"}
            for g in opt.param_groups]


def max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def run(out, save_at=2, steps=4):
    dist = common.init_dist("cpu")
    tok = models.make_toy_tokenizer()
    data = torch.randint(0, len(tok), (ROWS, T), generator=torch.Generator().manual_seed(7))

    def new_run(path=None, settings=SAVED):
        model = models.load_model(os.path.join(path, "model"))[0] if path else models.tiny_qwen3(tok, "tiny", seed=0)
        model = common.wrap_fsdp(model, dist)
        return model, torch.optim.AdamW(model.parameters(), **settings)

    def step(model, opt, cursor):
        """One update on B rows near `cursor` (which moves on by B), drawn with all three RNGs; each rank trains its
        share of the rows, the loss is a global token mean."""
        rows = data[[(cursor + i) % ROWS for i in random.sample(range(2 * B), B)]]  # python RNG: which rows
        keep = torch.rand(B, T - 1) < 0.8  # torch RNG: which targets count
        scale = float(np.random.uniform(0.5, 2.0))  # numpy RNG: the loss scale
        mine = slice(dist.rank * B // dist.world_size, (dist.rank + 1) * B // dist.world_size)
        logits = model(rows[mine]).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[mine, 1:].reshape(-1),
                                                reduction="none")
        (scale * (nll * keep[mine].reshape(-1)).sum() / (keep.sum() / dist.world_size)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return cursor + B

    def resume(ckpt, settings, restore_optimizer):
        common.set_seed(99)  # a new process: other RNG states until the checkpoint's come back
        model, opt = new_run(ckpt, settings)
        state = common.load_checkpoint(ckpt, model, opt if restore_optimizer else None)
        return model, opt, state["step"], state["cursor"]

    cfg = dataclasses.make_dataclass("Config", [("lr", float, SAVED["lr"])])()  # save_checkpoint writes a config
    common.set_seed(1234)
    model, opt = new_run()
    cursor = 0
    for _ in range(save_at):
        cursor = step(model, opt, cursor)
    common.save_checkpoint(out, save_at, model, tok, opt, cfg, {"cursor": cursor})
    saved_state, saved_groups = full_optim_state(model, opt), groups(opt)
    for _ in range(save_at, steps):  # the uninterrupted run goes on
        cursor = step(model, opt, cursor)
    uninterrupted, end_cursor = common.full_state_dict(model), cursor

    ckpt = common.latest_checkpoint(out)
    model, opt, done, cursor = resume(ckpt, OTHER, True)
    restored_state, restored_groups = full_optim_state(model, opt), groups(opt)
    for _ in range(done, steps):
        cursor = step(model, opt, cursor)
    resumed = common.full_state_dict(model)
    n_params = len(list(model.parameters()))

    model, opt, done, fresh_cursor = resume(ckpt, SAVED, False)  # the control: fresh Adam moments
    for _ in range(done, steps):
        fresh_cursor = step(model, opt, fresh_cursor)
    fresh = common.full_state_dict(model)

    if dist.is_main:
        keys = sorted({k for st in saved_state.values() for k in st})
        diff = {k: max((saved_state[p][k].float() - restored_state[p][k].float()).abs().max().item()
                       for p in saved_state) for k in keys}
        init = models.tiny_qwen3(tok, "tiny", seed=0).state_dict()
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"saved_groups": saved_groups, "restored_groups": restored_groups, "state_keys": keys,
                       "state_diff": diff, "params_in_state": len(restored_state), "params": n_params,
                       "resumed_vs_uninterrupted": max_diff(uninterrupted, resumed),
                       "fresh_vs_uninterrupted": max_diff(uninterrupted, fresh), "moved": max_diff(uninterrupted, init),
                       "cursor": cursor, "end_cursor": end_cursor}, f)
    torch.distributed.barrier()
    common.destroy_dist()


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    run(sys.argv[1])
    common.exit_process()
