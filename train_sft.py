"""Cold-start SFT: full fine-tune of a Qwen3 student on multi-turn tool-integrated-reasoning conversations.

The loss covers assistant tokens only (each assistant turn's content through its <|im_end|>); system, user and tool
tokens are context. The mask comes from rendering the conversation up to each assistant turn (render-and-diff), so
it follows whatever the chat template does. Conversations are packed into rows of `micro_batch_tokens` with no
attention across them: position ids restart per conversation and attention runs per conversation (varlen flash
attention on GPU when flash-attn is installed, else one SDPA call per conversation), so packing costs no
cross-document compute. `--packing false` pads one conversation per row instead (the baseline of bench/bench_sft.py).
The loss is the NLL summed over trained tokens divided by their count in the global batch (all micro-batches, all
ranks). Each checkpoint's out_dir/step_XXXXXX/model is a Hugging Face model directory (eval.py, train_sod.py, vLLM).

    python train_sft.py --config configs/toy_sft.py --model toy:toy_teacher --out_dir out/toy/teacher_sft   # CPU toy
    torchrun --nproc_per_node=2 train_sft.py --config configs/toy_sft.py --out_dir out/toy/sft2           # gloo
    python train_sft.py --config configs/sft_qwen3_0.6b.py                                                  # 1 GPU
    torchrun --nproc_per_node=8 train_sft.py --config configs/sft_qwen3_0.6b.py                            # paper
"""

import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import common
import data
import models
import runs
import sod_loss
import toy
from common import print0


@dataclass
class Config:
    model: str = "toy:toy_student"  # HF dir / Hub id / run dir (its latest checkpoint) / toy:<size>
    data: str = "toy"  # "toy", a Hub dataset id or a local parquet/jsonl path (messages + tools)
    toy_n: int = 2000  # conversations of the toy task when data == "toy"
    toy_fail: float = 0.25  # toy: share of the conversations that recover from a failed call first
    toy_slip: float = 0.0  # toy: share that miscopy an operand (sloppy demonstrations; docs/toy.md)
    protocol: str = "clean"  # the toy conversations' tool replies: clean | paper (docs/fidelity.md; real data: its own)
    out_dir: str = "out/sft"  # checkpoints (step_XXXXXX/), metrics.jsonl, config.py
    max_length: int = 32768  # tokens per conversation
    truncate: bool = False  # longer conversations: truncate (True) or drop (False)
    packing: bool = True  # pack conversations into rows (False: one conversation per row, padded)
    batch_size: int = 128  # conversations per optimizer step (global, all ranks)
    micro_batch_tokens: int = 32768  # tokens per forward/backward on one rank (>= max_length)
    epochs: int = 5  # passes over the conversations
    max_steps: int = 0  # 0: epochs decide
    lr: float = 1e-5  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    warmup_ratio: float = 0.1  # linear warmup over this fraction of the steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm
    logprob_chunk: int = 1024  # tokens per chunk of the log-softmax (never a (T, V) fp32 block)
    compile: bool = False  # torch.compile each decoder block
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    seed: int = 0  # data order
    save_every: int = 0  # 0: only at the end
    resume: bool = False  # continue from out_dir's newest intact checkpoint
    overwrite: bool = False  # a fresh run into an out_dir holding a run: remove that run's files first
    threads: int = 0  # CPU intra-op threads; 0 = the cores idle at start (common.set_threads)
    wandb_project: str | None = None  # log to wandb too (pip install wandb)

# -----------------------------------------------------------------------------
# Helpers (pure, tested in tests/test_sft.py)


END_OF_TURN = "<|im_end|>"


def render(tok, messages, tools, gen=False):
    return tok.apply_chat_template(messages, tools=tools or None, add_generation_prompt=gen, tokenize=False,
                                   enable_thinking=True)


def tokenize_conversation(tok, messages, tools):
    """(ids, loss_mask): mask 1 exactly on each assistant turn's tokens after its `<|im_start|>assistant\\n` header,
    through its <|im_end|>. A turn starts where the render of the messages before it plus the generation prompt
    ends; that render must be a prefix of the whole conversation's (else ValueError: the template rewrites earlier
    turns, as Qwen3 does to reasoning before a later user message). The text is tokenised once; character spans map
    to tokens through the tokenizer's offsets."""
    text = render(tok, messages, tools)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            head = render(tok, messages[:k], tools, gen=True)
            if not text.startswith(head):
                raise ValueError(f"the chat template re-renders the turns before assistant message {k}")
            end = text.find(END_OF_TURN, len(head))
            assert end >= 0, "an assistant turn without its end-of-turn token"
            spans.append((len(head), end + len(END_OF_TURN)))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask, j = [], 0
    for a, b in enc["offset_mapping"]:
        while j < len(spans) and a >= spans[j][1]:
            j += 1
        inside = j < len(spans) and a >= spans[j][0]
        if j < len(spans) and (a < spans[j][0] < b or a < spans[j][1] < b):
            raise ValueError("a token straddles an assistant turn boundary")
        mask.append(int(inside))
    return enc["input_ids"], mask


def pack(docs, max_tokens):
    """First-fit decreasing: docs (ids, mask) into rows of at most max_tokens tokens, longest docs first."""
    rows, room = [], []
    for d in sorted(docs, key=lambda d: -len(d[0])):
        i = next((i for i, r in enumerate(room) if r >= len(d[0])), len(rows))
        if i == len(rows):
            rows.append([])
            room.append(max_tokens)
        rows[i].append(d)
        room[i] -= len(d[0])
    return rows


def pad_groups(docs, max_tokens):
    """The padded baseline: docs in their order, one per row, grouped while rows x longest <= max_tokens."""
    groups, cur, longest = [], [], 0
    for d in docs:
        if cur and (len(cur) + 1) * max(longest, len(d[0])) > max_tokens:
            groups.append(cur)
            cur, longest = [], 0
        cur.append(d)
        longest = max(longest, len(d[0]))
    return groups + [cur] if cur else groups


def micro_batches(docs, max_tokens, packing):
    """Micro-batches, each a list of rows, each row a list of docs: one packed row, or a group of one-doc rows."""
    if packing:
        return [[row] for row in pack(docs, max_tokens)]
    return [[[d] for d in g] for g in pad_groups(docs, max_tokens)]


def collate(rows):
    """Rows of docs -> (B, T) input_ids, targets (the next token of the same doc), weights (1 where that target is
    trained) and position_ids (restarting per doc). Padding goes at the right, where causal attention keeps it out
    of every real token's view; its positions continue its row's last doc, so it never looks like a new doc."""
    T = max(sum(len(d[0]) for d in r) for r in rows)
    ids, tgt = torch.zeros(len(rows), T, dtype=torch.long), torch.zeros(len(rows), T, dtype=torch.long)
    w, pos = torch.zeros(len(rows), T), torch.arange(T).repeat(len(rows), 1)
    for b, r in enumerate(rows):
        t = 0
        for d_ids, d_mask in r:
            n = len(d_ids)
            ids[b, t:t + n] = torch.tensor(d_ids)
            tgt[b, t:t + n - 1] = torch.tensor(d_ids[1:], dtype=torch.long)
            w[b, t:t + n - 1] = torch.tensor(d_mask[1:], dtype=torch.float)
            pos[b, t:] = torch.arange(T - t)
            t += n
    return ids, tgt, w, pos


def doc_attention(module, q, k, v, attention_mask, scaling=None, dropout=0.0, position_ids=None, **kwargs):
    """Causal attention within each doc of a row (docs start where position_ids == 0): q (B, Hq, T, D), k and v
    (B, Hkv, T, D) -> (B, T, Hq, D). The compute is sum(n_doc^2), not T^2 as with a block-diagonal mask."""
    assert attention_mask is None and position_ids is not None
    sdpa = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=dropout, is_causal=True, scale=scaling,
                                                          enable_gqa=True)
    starts = [(p == 0).nonzero().flatten().tolist() + [q.shape[2]] for p in position_ids.expand(q.shape[0], -1)]
    if all(len(s) == 2 for s in starts):  # one doc per row (padded mode): one batched call
        return sdpa(q, k, v).transpose(1, 2), None
    rows = [torch.cat([sdpa(q[i:i + 1, :, a:b], k[i:i + 1, :, a:b], v[i:i + 1, :, a:b])
                       for a, b in zip(s[:-1], s[1:])], dim=2) for i, s in enumerate(starts)]
    return torch.cat(rows).transpose(1, 2), None


def set_attention(model, device):
    """Varlen flash attention on CUDA when flash-attn is installed, else per-doc SDPA; both need only the restarted
    position ids. Prints the choice."""
    from transformers import AttentionInterface
    from transformers.utils import is_flash_attn_2_available

    AttentionInterface.register("doc_sdpa", doc_attention)
    name = "flash_attention_2" if device.type == "cuda" and is_flash_attn_2_available() else "doc_sdpa"
    model.set_attn_implementation(name)
    print0(f"attention: {name}" + ("" if name != "doc_sdpa" or device.type == "cpu" else
                                  " (flash-attn not installed: one SDPA call per conversation)"))


def batch_nll(model, rows, device, chunk=1024):
    """Summed NLL of the trained targets of one micro-batch (rows of docs), from the final hidden states and the
    lm_head weight in chunks (the root's params stay gathered after forward under FSDP2)."""
    ids, tgt, w, pos = (x.to(device) for x in collate(rows))
    h = common.final_hidden_states(model, input_ids=ids, position_ids=pos)
    logp = sod_loss.token_logprobs(h, model.lm_head.weight, tgt, chunk)
    return -(logp * w).sum()


def load_docs(cfg, tok):
    if cfg.protocol not in ("clean", "paper"):
        raise SystemExit(f"sft: unknown protocol {cfg.protocol!r}; choose clean or paper")
    convs = toy.toy_sft_conversations(cfg.toy_n, cfg.seed, cfg.protocol, cfg.toy_fail, cfg.toy_slip) \
        if cfg.data == "toy" else data.load_sft_data(cfg.data)
    docs, dropped, cut, bad = [], 0, 0, 0
    for c in convs:
        try:
            ids, mask = tokenize_conversation(tok, c["messages"], c["tools"])
        except ValueError:
            bad += 1
            continue
        if len(ids) > cfg.max_length:
            if not cfg.truncate:
                dropped += 1
                continue
            ids, mask, cut = ids[:cfg.max_length], mask[:cfg.max_length], cut + 1
        docs.append((ids, mask))
    print0(f"data: {len(docs)} conversations, {sum(len(d[0]) for d in docs)} tokens, "
           f"{sum(sum(d[1]) for d in docs)} trained; {dropped} dropped and {cut} truncated at {cfg.max_length}; "
           f"{bad} skipped (template not prefix-stable)")
    return docs


def lr_at(step, total, cfg):
    """Linear warmup over warmup_ratio of the steps, then cosine down to lr * min_lr_ratio (step is 1-based)."""
    warm = max(1, int(cfg.warmup_ratio * total))
    if step <= warm:
        return cfg.lr * step / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

# -----------------------------------------------------------------------------


def main(argv=None):
    cfg = common.parse_config(Config, argv)
    if cfg.max_length > cfg.micro_batch_tokens:
        raise SystemExit(f"config: max_length ({cfg.max_length}) must fit in micro_batch_tokens "
                         f"({cfg.micro_batch_tokens})")
    dist = common.init_dist()
    try:
        common.print_config(cfg)
        common.set_threads(cfg.threads)
        common.set_seed(cfg.seed)
        ckpt = common.latest_checkpoint(cfg.out_dir) if cfg.resume else None
        runs.claim_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite, ckpt)
        model, tok = models.load_model(os.path.join(ckpt, "model") if ckpt else cfg.model)
        set_attention(model, dist.device)
        model = common.wrap_fsdp(model, dist, compile=cfg.compile,
                                 activation_checkpointing=cfg.activation_checkpointing)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        start = common.load_checkpoint(ckpt, model, opt)["step"] if ckpt else 0

        docs = load_docs(cfg, tok)
        steps_per_epoch = len(docs) // cfg.batch_size
        if steps_per_epoch == 0:
            raise SystemExit(f"data: {len(docs)} conversations is less than one batch of {cfg.batch_size}")
        total = cfg.max_steps or cfg.epochs * steps_per_epoch
        logger = common.MetricsLogger(cfg.out_dir, cfg, cfg.wandb_project)
        print0(f"sft: {total} steps of {cfg.batch_size} conversations ({steps_per_epoch} per epoch), packing "
               f"{'on' if cfg.packing else 'off'}, from step {start}")

        model.train()
        for step in range(start + 1, total + 1):
            t0 = time.time()
            # the batch is a pure function of (seed, epoch, step): the step is the whole data cursor for --resume
            epoch, k = divmod(step - 1, steps_per_epoch)
            order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            batch = [docs[i] for i in order[k * cfg.batch_size:(k + 1) * cfg.batch_size].tolist()]
            n_trained = max(1, sum(sum(d[1][1:]) for d in batch))  # targets of the global batch, known on every rank
            # every rank packs the whole batch the same way and takes every world_size-th micro-batch; ranks with one
            # fewer run an empty one, so all ranks issue the same FSDP collectives
            mbs = micro_batches(batch, cfg.micro_batch_tokens, cfg.packing)
            mine = common.pad_to_max_count(mbs[dist.rank::dist.world_size], [[([0], [0])]])
            lr = lr_at(step, total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            nll_sum = torch.zeros((), dtype=torch.float64)
            for rows in mine:
                nll = batch_nll(model, rows, dist.device, cfg.logprob_chunk)
                (nll / (n_trained / dist.world_size)).backward()  # FSDP averages over ranks: a global token mean
                nll_sum += nll.detach().double().cpu()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss = common.all_reduce_sum(nll_sum).item() / n_trained
            dt = time.time() - t0
            m = dict(loss=loss, lr=lr, grad_norm=float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn),
                     tokens_per_s=sum(len(d[0]) for d in batch) / dt, trained_per_s=n_trained / dt,
                     micro_batches=len(mbs), step_time=dt)
            logger.log(step, m)
            print0(f"step {step:5d}/{total} | loss {loss:.4f} | lr {lr:.2e} | grad norm {m['grad_norm']:.3f} | "
                   f"{m['tokens_per_s']:.0f} tok/s ({m['trained_per_s']:.0f} trained) | {len(mbs)} micro-batches | "
                   f"{dt:.2f}s")
            if (cfg.save_every and step % cfg.save_every == 0) or step == total:
                with runs.interrupts_held():
                    common.save_checkpoint(cfg.out_dir, step, model, tok, opt, cfg, {"epoch": epoch, "cursor": k + 1})
        torch.distributed.barrier()  # no rank tears the group down while another still uses it
    except (KeyboardInterrupt, SystemExit) as e:  # one line, from rank 0, instead of a traceback per rank
        runs.stopped(e, cfg.out_dir)
    finally:
        common.destroy_dist()


if __name__ == "__main__":
    main()
    common.exit_process()
