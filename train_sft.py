"""Cold-start SFT: full fine-tune of a Qwen3 student on multi-turn tool-integrated-reasoning conversations.

The loss covers assistant tokens only (each assistant turn's content through its <|im_end|>); system, user and tool
tokens are context. Conversations are packed into micro-batches with no attention across them (position ids
restart per conversation; a block-diagonal causal mask, or varlen flash attention when the model uses it). The output
is a Hugging Face model directory per checkpoint (out_dir/step_XXXXXX/model) that eval.py, train_sod.py and vLLM load.

    python train_sft.py --config configs/toy_sft.py --model toy:toy_teacher --out_dir out/toy/teacher_sft   # CPU toy
    torchrun --nproc_per_node=8 train_sft.py --config configs/sft_qwen3_0.6b.py                            # paper
"""

import math
import os
import time
from dataclasses import dataclass

import torch

import common
import data
from common import print0


@dataclass
class Config:
    model: str = "toy:toy_student"  # HF dir / Hub id / run dir / toy:<size>
    data: str = "toy"  # "toy", a Hub dataset id or a local parquet/jsonl path (messages + tools)
    toy_n: int = 2000  # conversations of the toy task when data == "toy"
    out_dir: str = "out/sft"
    max_length: int = 32768  # tokens per conversation
    truncate: bool = False  # longer conversations: truncate (True) or drop (False)
    packing: bool = True  # pack conversations into rows (False: pad each conversation to the micro-batch's longest)
    batch_size: int = 128  # conversations per optimizer step (global)
    micro_batch_tokens: int = 32768  # tokens per forward/backward on one rank
    epochs: int = 5
    max_steps: int = 0  # 0: epochs decide
    lr: float = 1e-5
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    compile: bool = False
    activation_checkpointing: bool = False
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    resume: bool = False
    wandb_project: str | None = None

# -----------------------------------------------------------------------------
# Helpers (pure, tested in tests/test_sft.py)


def render(tok, messages, tools, gen=False):
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=gen, tokenize=True,
                                   return_dict=False)


def tokenize_conversation(tok, messages, tools):
    """(ids, loss_mask): mask 1 exactly on assistant turns' tokens after the `<|im_start|>assistant\\n` header,
    through their <|im_end|>. Spans come from rendering prefixes of the conversation (render-and-diff), so they
    follow the chat template whatever it does with thinking or tool calls."""
    ids = render(tok, messages, tools)
    mask = [0] * len(ids)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(tok, messages[:k], tools, gen=True))  # up to and including the assistant header
        upto = render(tok, messages[:k + 1], tools)
        end = max(i for i, t in enumerate(upto) if t == im_end) + 1
        if ids[:end] != upto[:end] or start > end:
            raise ValueError("chat template breaks the prefix property at an assistant turn")
        mask[start:end] = [1] * (end - start)
    return ids, mask


def pack(docs, max_tokens):
    """Greedy first-fit packing of (ids, mask) docs (in order) into rows of at most max_tokens tokens."""
    rows, cur, n = [], [], 0
    for d in docs:
        if cur and n + len(d[0]) > max_tokens:
            rows.append(cur)
            cur, n = [], 0
        cur.append(d)
        n += len(d[0])
    return rows + [cur] if cur else rows


def pad_groups(docs, max_tokens):
    """The padded alternative to pack: groups of docs (in order), one row each, count x longest <= max_tokens."""
    groups, cur, longest = [], [], 0
    for d in docs:
        if cur and (len(cur) + 1) * max(longest, len(d[0])) > max_tokens:
            groups.append(cur)
            cur, longest = [], 0
        cur.append(d)
        longest = max(longest, len(d[0]))
    return groups + [cur] if cur else groups


def micro_batches(docs, max_tokens, packing):
    """Lists of rows of docs: one packed row per micro-batch, or a padded group of one-doc rows."""
    if packing:
        return [[row] for row in pack(docs, max_tokens)]
    return [[[d] for d in g] for g in pad_groups(docs, max_tokens)]


def collate(rows):
    """Rows of docs -> input_ids, labels (-100 off the loss mask, already shifted: labels[t] = target of t),
    position_ids (restarting per doc) and a (B, 1, T, T) boolean block-diagonal causal mask (padding excluded)."""
    T = max(sum(len(d[0]) for d in r) for r in rows)
    B = len(rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    doc = torch.full((B, T), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        t = 0
        for j, (d_ids, d_mask) in enumerate(r):
            n = len(d_ids)
            ids[b, t:t + n] = torch.tensor(d_ids)
            tgt = torch.tensor(d_ids[1:] + [0])
            keep = torch.tensor(d_mask[1:] + [0], dtype=torch.bool)
            labels[b, t:t + n] = torch.where(keep, tgt, -100)
            pos[b, t:t + n] = torch.arange(n)
            doc[b, t:t + n] = j
            t += n
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    attn = (doc[:, :, None] == doc[:, None, :]) & (doc[:, :, None] >= 0) & causal
    attn |= torch.eye(T, dtype=torch.bool)  # padding rows attend to themselves: no all-masked softmax rows
    return ids, labels, pos, attn[:, None]


def load_docs(cfg, tok):
    convs = data.toy_sft_conversations(cfg.toy_n, cfg.seed) if cfg.data == "toy" else data.load_sft_data(cfg.data)
    docs, dropped, cut = [], 0, 0
    for c in convs:
        ids, mask = tokenize_conversation(tok, c["messages"], c["tools"])
        if len(ids) > cfg.max_length:
            if not cfg.truncate:
                dropped += 1
                continue
            ids, mask, cut = ids[:cfg.max_length], mask[:cfg.max_length], cut + 1
        docs.append((ids, mask))
    print0(f"data: {len(docs)} conversations, {sum(len(d[0]) for d in docs)} tokens, "
           f"{sum(sum(d[1]) for d in docs)} trained; {dropped} dropped and {cut} truncated at {cfg.max_length}")
    return docs


def lr_at(step, total, cfg):
    warm = max(1, int(cfg.warmup_ratio * total))
    if step <= warm:
        return cfg.lr * step / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

# -----------------------------------------------------------------------------


def main(argv=None):
    cfg = common.parse_config(Config, argv)
    dist = common.init_dist()
    try:
        train(cfg, dist)
        torch.distributed.barrier()  # no rank tears the group down while another still uses it
    finally:
        common.destroy_dist()


def train(cfg, dist):
    common.print_config(cfg)
    common.set_seed(cfg.seed)
    ckpt = common.latest_checkpoint(cfg.out_dir) if cfg.resume else None
    model, tok = common.load_model(os.path.join(ckpt, "model") if ckpt else cfg.model)
    if cfg.batch_size % dist.world_size:
        raise SystemExit(f"config: batch_size ({cfg.batch_size}) must be a multiple of the world size")
    model = common.wrap_fsdp(model, dist, compile=cfg.compile, activation_checkpointing=cfg.activation_checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start = common.load_checkpoint(ckpt, model, opt)["step"] if ckpt else 0
    docs = load_docs(cfg, tok)
    steps_per_epoch = len(docs) // cfg.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"data: {len(docs)} conversations is less than one batch of {cfg.batch_size}")
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    logger = common.MetricsLogger(cfg.out_dir, cfg, cfg.wandb_project)
    varlen = getattr(model.config, "_attn_implementation", "") == "flash_attention_2"  # position ids suffice
    print0(f"sft: {total} steps of {cfg.batch_size} conversations ({steps_per_epoch} per epoch), packing "
           f"{'on' if cfg.packing else 'off'}, attention {'varlen flash' if varlen else 'block-diagonal mask'}, "
           f"from step {start}")
    model.train()
    for step in range(start + 1, total + 1):
        t0 = time.time()
        # the batch: a pure function of (seed, epoch, step), so --resume needs only the step
        epoch, k = divmod(step - 1, steps_per_epoch)
        order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        batch = [docs[i] for i in order[k * cfg.batch_size:(k + 1) * cfg.batch_size]]
        mine = batch[dist.rank::dist.world_size]
        n_tok = sum(sum(d[1][1:]) for d in batch)  # trained targets of the global batch (every rank knows it)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg)
        loss_sum, seen = 0.0, 0
        for rows in micro_batches(mine, cfg.micro_batch_tokens, cfg.packing):
            ids, labels, pos, attn = (x.to(dist.device) for x in collate(rows))
            out = model(input_ids=ids, position_ids=pos, attention_mask=None if varlen else attn, use_cache=False)
            nll = torch.nn.functional.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(),
                                                    ignore_index=-100, reduction="sum")
            (nll / (n_tok / dist.world_size)).backward()  # FSDP averages over ranks: a global token mean
            loss_sum += nll.item()
            seen += int((pos > 0).sum()) + sum(len(r) for r in rows)  # real tokens, not padding
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats = common.all_reduce_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64)).tolist()
        dt = time.time() - t0
        m = dict(loss=stats[0] / n_tok, lr=lr_at(step, total, cfg), grad_norm=float(gn.full_tensor()
                 if hasattr(gn, "full_tensor") else gn), tokens_per_s=stats[1] / dt, step_time=dt)
        logger.log(step, m)
        print0(f"step {step:5d}/{total} | loss {m['loss']:.4f} | lr {m['lr']:.2e} | grad norm {m['grad_norm']:.3f} | "
               f"{m['tokens_per_s']:.0f} tok/s | {dt:.2f}s")
        if (cfg.save_every and step % cfg.save_every == 0) or step == total:
            common.save_checkpoint(cfg.out_dir, step, model, tok, opt, cfg, {"epoch": epoch})


if __name__ == "__main__":
    main()
