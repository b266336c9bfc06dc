"""SOD training: on-policy RL + step-wise distillation from a frozen teacher, for tool-integrated reasoning.

Each step: sample `group_size` multi-turn rollouts per prompt with the student (its Python runs in the sandbox), grade
them, score the sampled tokens with the student (old log-probs) and the teacher, build the advantage of `--algo`
(grpo / opd / sod / gated, see sod_loss.py), run PPO-clip mini-batch updates, push the new weights to the rollout
engine, log, dump sample trajectories, evaluate and checkpoint now and then. The run lasts `epochs` passes over
the prompt set, or `max_steps` steps if that comes first (0: epochs decide).

    python train_sod.py --config configs/toy.py                                    # CPU toy (after toy SFT)
    python train_sod.py --config configs/toy.py --algo grpo --out_dir out/toy/grpo
    torchrun --nproc_per_node=8 train_sod.py --config configs/qwen3_0.6b.py        # the paper's run
    python train_sod.py --plot out/toy/sod                                         # curves -> out/toy/sod/curves.png
"""

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np
import torch

import common
import data
import models
import report
import reward
import rollout
import runs
import sandbox
import sod_loss
import tools
import toy
from common import print0


@dataclass
class Config:
    # models and data
    student: str = "toy:toy_student"  # HF dir / Hub id / run dir (latest checkpoint) / toy:<size>
    teacher: str = "toy:toy_teacher"  # frozen teacher, same tokenizer as the student; unused by --algo grpo
    data: str = "toy"  # RL prompts: "toy", a Hub dataset id or a local parquet/jsonl path
    val_bench: str = "toy"  # validation benchmark for eval_every ("" = none): toy, aime24, aime25, ...
    val_limit: int = 64  # validation problems (0 = all)
    val_k: int = 4  # samples per validation problem
    out_dir: str = "out/sod"  # checkpoints, metrics.jsonl, trajectory dumps
    # algorithm (docs/algorithm.md)
    algo: str = "sod"  # grpo | opd | sod | gated
    opd_coef: float = 1.0  # c: weight of the distillation term in the advantage
    sod_eps: float = 1e-6  # ε in the step weight
    sod_delta: float = 0.2  # δ: step weights are capped at 1 + δ
    beta_min: float = 0.0  # gated (legacy) only: gate range and slope
    beta_max: float = 1.0
    gamma: float = 1.0
    clip_low: float = 0.2  # PPO ratio clip below 1
    clip_high: float = 0.28  # PPO ratio clip above 1 (clip-higher)
    clip_ratio_c: float = 3.0  # dual clip: where A < 0 the loss is capped at -A * clip_ratio_c (> 1)
    # rollouts
    backend: str = "auto"  # auto (vllm on CUDA when installed, else hf) | hf | vllm
    prompts_per_step: int = 64  # global, split over ranks
    group_size: int = 16  # rollouts per prompt (the GRPO group, G)
    max_turns: int = 16  # assistant turns per episode
    max_prompt_len: int = 2560  # longer prompts are dropped at load time
    max_response_len: int = 20480  # response tokens per episode (tool outputs included)
    protocol: str = "clean"  # tool I/O and grading, docs/fidelity.md: paper (the original recipe) | clean (the toy's)
    grader: str = ""  # strict | normalized | math_verify; "" = the protocol's (paper: strict, clean: normalized)
    shaping: str = ""  # tool-use shaping of wrong answers: row | turns | none; "" = the protocol's (reward.py)
    max_obs_chars: int = 0  # tool output shown per call; 0 = the protocol's (paper: 256, clean: 2048)
    temperature: float = 1.0
    top_p: float = 1.0
    val_temperature: float = 1.0
    val_top_p: float = 0.6
    sandbox_url: str | None = None  # None: local sandbox pool; else a SandboxFusion URL
    tool_timeout: float = 0.0  # seconds per tool call; 0 = the protocol's (paper: 60, clean: 10)
    tool_max_calls: int = -1  # tool calls run per assistant turn; -1 = the protocol's (paper: 1, clean: 0 = all)
    tool_memory_mb: int = 0  # memory per tool call; 0 = the protocol's (2048)
    rollout_mode: str = "continuous"  # continuous (an episode goes on as soon as its own tools are back) | sync
    overlong_buffer: int = 1024  # DAPO overlong shaping
    overlong_penalty: float = 1.0
    gpu_memory_utilization: float = 0.75  # vLLM
    # optimisation
    lr: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mini_batch_prompts: int = 16  # global prompts per PPO update (prompts_per_step / this = updates per step)
    ppo_epochs: int = 1
    micro_batch_tokens: int = 16384  # tokens per forward/backward micro-batch (per rank)
    logprob_chunk: int = 1024  # tokens per chunk of the log-softmax in token_logprobs
    compile: bool = False  # per-block torch.compile
    activation_checkpointing: bool = False
    offload_teacher: bool = False  # keep the teacher's shards in CPU memory between uses (CUDA)
    # loop
    epochs: int = 1  # passes over the prompt set
    max_steps: int = 0  # stop earlier, after this many steps (0: epochs decide)
    seed: int = 0
    eval_every: int = 10  # 0 = never
    save_every: int = 10  # 0 = only at the end
    keep_last: int = 3  # checkpoints kept on disk, newest first (0 = all)
    mismatch_warn: float = 0.05  # warn when a rank's sampler log-probs drift this far (nats/token) from the trainer's
    dump_every: int = 10  # sample trajectories as JSONL + HTML (0 = never)
    dump_episodes: int = 8
    resume: bool = False  # continue from out_dir's newest intact checkpoint
    overwrite: bool = False  # a fresh run into an out_dir holding a run: remove that run's files first
    threads: int = 0  # CPU intra-op threads; 0 = the cores idle at start (common.set_threads)
    wandb_project: str | None = None  # log to wandb too (pip install wandb)


# -----------------------------------------------------------------------------
# Helpers (pure, tested in tests/test_sod.py)

def load_problems(spec, tok, max_prompt_len, limit=0, seed=0, bench=False):
    """Problems with their prompt ids; prompts longer than max_prompt_len are dropped (count printed), measured as
    the original's filter does (rl_dataset.py, maybe_filter_out_long_prompts: the template without the tools)."""
    if bench:
        probs = data.load_eval_data(spec)
    else:
        probs = toy.toy_problems(2048, seed=seed) if spec == "toy" else data.load_rl_data(spec)
    if limit:
        probs = probs[:limit]
    template = lambda p, schema: tok.apply_chat_template(p["prompt_messages"], tools=schema, add_generation_prompt=True,
                                                        tokenize=True, return_dict=False)
    kept = [p for p in probs if len(template(p, None)) <= max_prompt_len]
    for p in kept:
        p["prompt_ids"] = template(p, p["tools"])
    print0(f"data: {spec}: {len(kept)} problems ({len(probs) - len(kept)} dropped as longer than {max_prompt_len})")
    if not kept:
        raise SystemExit(f"data: no usable problem in {spec!r}")
    return kept


def epoch_order(num, epoch, seed):
    """The shuffled problem order of one epoch: a pure function of (seed, epoch), so resuming needs only a cursor."""
    return np.random.default_rng([seed, epoch]).permutation(num).tolist()


def batch_problems(problems, step, per_step, seed):
    """The problems of global step `step` (1-based), walking epoch after epoch."""
    start = (step - 1) * per_step
    order = []
    epoch = start // len(problems)
    while len(order) < start % len(problems) + per_step:
        order += epoch_order(len(problems), epoch, seed)
        epoch += 1
    return [problems[i] for i in order[start % len(problems):start % len(problems) + per_step]]


def sample_episodes(engine, tok, problems, group_size, cfg, temperature, top_p, execute):
    """group_size graded episodes per problem (grouped: problem i owns episodes i*G .. i*G+G-1)."""
    prompts = [p["prompt_ids"] for p in problems for _ in range(group_size)]
    eps = rollout.rollout(engine, tok, prompts, max_turns=cfg.max_turns, max_response_len=cfg.max_response_len,
                          temperature=temperature, top_p=top_p, execute=execute,
                          tools=tools.protocol_of(cfg), mode=cfg.rollout_mode)
    grading = reward.grading(cfg.protocol, cfg.grader, cfg.shaping)
    for i, ep in enumerate(eps):
        p = problems[i // group_size]
        r = reward.compute_score(p["source"], ep.response_text, p["ground_truth"], ep.num_turns, ep.response_len,
                                 cfg.max_response_len, cfg.overlong_buffer, cfg.overlong_penalty,
                                 run=execute if p["source"] != "toy" else None, extra_info=p.get("extra_info"),
                                 **grading)
        ep.score, ep.acc, ep.pred = r["score"], r["acc"], r["pred"]
    return eps


def micro_batches(lengths, max_tokens):
    """Greedy groups of sequence indices whose padded size (count x longest) fits max_tokens (one at least)."""
    groups, cur, longest = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if cur and (len(cur) + 1) * max(longest, lengths[i]) > max_tokens:
            groups.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, lengths[i])
    return groups + [cur] if cur else groups


def pad(rows, value, dtype):
    t = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=dtype)
    for i, r in enumerate(rows):
        t[i, :len(r)] = torch.as_tensor(r, dtype=dtype)
    return t


def batch_tensors(episodes, idx, dev):
    """(B, T) ids and attention mask of the episodes `idx`, right-padded; no index is an empty pass: one two-token
    row that runs the model's collectives and counts for nothing."""
    if not idx:
        return torch.zeros((1, 2), dtype=torch.long, device=dev), torch.ones((1, 2), dtype=torch.long, device=dev)
    ids = pad([episodes[i].ids for i in idx], 0, torch.long).to(dev)
    return ids, pad([[1] * len(episodes[i].ids) for i in idx], 0, torch.long).to(dev)


def sequence_logprobs(model, ids, attn, chunk):
    """log p(ids[:, t] | ids[:, <t]) for t >= 1, as (B, T-1) float32, from the final norm's output and the lm_head
    weight (sod_loss.token_logprobs never builds (B, T, V) in fp32)."""
    h = common.final_hidden_states(model, input_ids=ids, attention_mask=attn)
    return sod_loss.token_logprobs(h[:, :-1], model.lm_head.weight, ids[:, 1:], chunk)


@torch.no_grad()
def score(model, episodes, groups, dev, chunk):
    """Per episode, the (len(ids)-1,) float32 log-probs of its tokens under `model` (no grad). `groups` may hold
    empty passes ([]), padding every rank to the same number of forwards."""
    out = [None] * len(episodes)
    for g in groups:
        lp = sequence_logprobs(model, *batch_tensors(episodes, g, dev), chunk).float().cpu()
        for j, i in enumerate(g):
            out[i] = lp[j, :len(episodes[i].ids) - 1]
    return out


def first_failure(episode):
    """Index of the episode's first assistant turn with a failed tool call (any status but "ok": malformed, raised,
    timed out, killed), or None."""
    return next((k for k, t in enumerate(episode.turns) if any(s != "ok" for s in t["status"])), None)


def failure_stats(episodes, stats):
    """OPD's failure mode in numbers, as sums and counts (ranks and steps add them up): the steps after an episode's
    first failed tool call ("after": the teacher reads an error it may never have seen) against the steps of episodes
    without one ("clean"), each with summed d_k and w_k; the episodes with a failed call, and how many of those still
    ended right (recovered). `stats` is sod_loss.step_stats of these episodes (steps are assistant turns)."""
    first = [first_failure(e) for e in episodes]
    out = dict(failed=sum(f is not None for f in first), recovered=sum(f is not None and bool(e.acc)
                                                                      for f, e in zip(first, episodes)),
               n_after=0, d_after=0.0, w_after=0.0, n_clean=0, d_clean=0.0, w_clean=0.0)
    for row, turn, d, w in zip(*(stats[k].tolist() for k in ("row", "turn", "d", "w"))):
        f = first[row]
        side = "clean" if f is None else "after" if turn > f else None  # the failing step and those before: neither
        if side:
            out[f"n_{side}"], out[f"d_{side}"], out[f"w_{side}"] = (out[f"n_{side}"] + 1, out[f"d_{side}"] + d,
                                                                    out[f"w_{side}"] + w)
    return out


def quantiles(x, qs=(0.1, 0.5, 0.9)):
    return [float(v) for v in np.quantile(x, qs)] if len(x) else [float("nan")] * len(qs)


@contextlib.contextmanager
def rank_local(what):
    """A phase whose work is each rank's own: if it raises on any rank, the failed ranks print their traceback and all
    stop (SystemExit), instead of waiting for it in their next collective (docs/multi_gpu.md#when-a-rank-fails)."""
    failed = False
    try:
        yield
    except Exception:
        print(f"[rank {os.environ['RANK']}] {what} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        failed = True
    flags = torch.zeros(torch.distributed.get_world_size(), dtype=torch.int64)  # one per rank, reduced by gloo
    flags[torch.distributed.get_rank()] = failed
    if bad := common.all_reduce_sum(flags).nonzero()[:, 0].tolist():
        raise SystemExit(f"rank(s) {bad} failed in {what}; stopping (their traceback is above)")


def collective_timeout(cfg, world):
    """The process-group timeout: above the skew the protocol allows between healthy ranks (every tool call and code
    test timing out, 50 ms per decode step), 2 h 50 min for the paper's run, 30 min at least (docs/multi_gpu.md)."""
    tool_s = tools.protocol_of(cfg).timeout + (30 if cfg.sandbox_url else 0)  # SandboxFusion's request waits +30 s
    grading = 0 if cfg.data == "toy" else cfg.prompts_per_step * cfg.group_size // world * 2 * reward.CODE_TIMEOUT
    return max(1800, (cfg.max_turns - 1) * tool_s + cfg.max_response_len * 0.05 + grading + 600)


def run(fn):
    """Run main, then end the process unfinalized (common.exit_process) whatever happened: a failed rank must not
    linger (destroy_process_group can block on NCCL peers) while the others wait for it."""
    try:
        fn()
    except SystemExit as e:  # a message for the user, or rank_local's verdict: said as Python says it
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
        common.exit_process(e.code or 0 if isinstance(e.code, int | None) else 1)
    except BaseException:
        traceback.print_exc()
        common.exit_process(1)
    common.exit_process()


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg = common.parse_config(Config, argv)
    if cfg.algo not in sod_loss.ALGOS:
        raise SystemExit(f"config: --algo must be one of {', '.join(sod_loss.ALGOS)}, not {cfg.algo!r}")
    dist = common.init_dist(timeout_s=collective_timeout(cfg, int(os.environ.get("WORLD_SIZE", "1"))))
    try:
        train(cfg, dist)
        torch.distributed.barrier()  # no rank tears the group down while another still uses it
    except (KeyboardInterrupt, SystemExit) as e:  # one line, from rank 0, instead of a traceback per rank
        runs.stopped(e, cfg.out_dir)
    common.destroy_dist()  # after a failure run() exits without it: it can block on peers stuck in NCCL


def train(cfg, dist):
    common.print_config(cfg)
    if cfg.prompts_per_step % dist.world_size or cfg.mini_batch_prompts % dist.world_size \
            or cfg.prompts_per_step % cfg.mini_batch_prompts:
        raise SystemExit("config: prompts_per_step must be a multiple of mini_batch_prompts, both of the world size")
    if cfg.overlong_buffer >= cfg.max_response_len:
        raise SystemExit(f"config: overlong_buffer ({cfg.overlong_buffer}) must be below max_response_len "
                         f"({cfg.max_response_len})")
    common.set_threads(cfg.threads)
    common.set_seed(cfg.seed + dist.rank)
    dev = dist.device

    # models: the student (trained, fp32 master weights), its rollout engine, the frozen teacher (in the dtype it
    # comes in; bf16 on CUDA, where it is only ever run in bf16). Both load into host memory; wrap_fsdp places the
    # shards. Sharded, the HF engine keeps its own copy (taken before sharding); in one CPU process the student stays
    # a plain module and the engine samples from its very parameters (no copy, the weight push finds them in place).
    ckpt = common.latest_checkpoint(cfg.out_dir) if cfg.resume else None
    runs.claim_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite, ckpt)
    student_path = models.resolve_model_path(os.path.join(ckpt, "model") if ckpt else cfg.student)
    student, tok = models.load_model(student_path)
    # data: each rank owns whole prompt groups. Prompts are filtered without the tool schema (the original's filter)
    # but rolled out with it: vLLM's max_model_len is sized from them as rolled out, so no turn ever reaches it
    problems = load_problems(cfg.data, tok, cfg.max_prompt_len, seed=cfg.seed)
    val = load_problems(cfg.val_bench, tok, cfg.max_prompt_len, cfg.val_limit, bench=True) if cfg.val_bench else []
    max_model_len = max(len(p["prompt_ids"]) for p in problems + val) + cfg.max_response_len
    print0(f"rollout: max_model_len {max_model_len} (the longest prompt with tools + max_response_len)")
    if max_model_len > student.config.max_position_embeddings:
        raise SystemExit(f"config: {max_model_len} tokens of prompt + response exceed the model's positions")
    engine = rollout.make_engine(cfg.backend, student_path, tok, model=student, seed=cfg.seed + dist.rank,
                                 gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=max_model_len,
                                 share=not common.shards(dist))
    student = common.wrap_fsdp(student, dist, compile=cfg.compile,
                               activation_checkpointing=cfg.activation_checkpointing)
    # the weights the trainer computes with (wrap_fsdp's param dtype) are the ones the engine samples with
    push_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    teacher = None
    if cfg.algo != "grpo":  # GRPO never needs the teacher: it is not even loaded
        teacher, teacher_tok = models.load_model(cfg.teacher, dtype=torch.bfloat16 if dev.type == "cuda" else "auto")
        if teacher_tok.get_vocab() != tok.get_vocab():
            raise SystemExit("teacher: its tokenizer differs from the student's; on-policy distillation scores the "
                             "student's own token ids with the teacher, so both must share one vocabulary")
        teacher.requires_grad_(False).eval()
        teacher = common.wrap_fsdp(teacher, dist, offload=cfg.offload_teacher)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    start = common.load_checkpoint(ckpt, student, opt)["step"] if ckpt else 0
    per_epoch = len(problems) // cfg.prompts_per_step
    max_steps = min(cfg.max_steps or cfg.epochs * per_epoch, cfg.epochs * per_epoch)
    execute = sandbox.make_executor(cfg.sandbox_url, tools.protocol_of(cfg).memory_mb)
    logger = common.MetricsLogger(cfg.out_dir, cfg, cfg.wandb_project)
    per_rank = cfg.prompts_per_step // dist.world_size
    print0(f"sod: algo {cfg.algo}, {max_steps} steps of {cfg.prompts_per_step} prompts x {cfg.group_size} rollouts "
           f"({cfg.epochs} epoch(s) of {per_epoch} steps, max_steps {cfg.max_steps or 'unset'}), "
           f"{cfg.prompts_per_step // cfg.mini_batch_prompts} updates per step, from step {start}")

    for step in range(start + 1, max_steps + 1):
        t_step, times, m = time.time(), {}, {}

        # ---- sampling phases (eval, rollouts) with the engine fully awake: weights AND KV cache. The push after
        # the last update woke only the weights; vLLM does not schedule while any part sleeps.
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # hand the training phase's cached blocks back before vLLM takes its share
        engine.wake_up()

        # ---- eval (before the step, so step 1 reports the starting point)
        if val and cfg.eval_every and (step - 1) % cfg.eval_every == 0:
            t0 = time.time()
            with rank_local("eval"):
                eps = sample_episodes(engine, tok, val[dist.rank::dist.world_size], cfg.val_k, cfg,
                                      cfg.val_temperature, cfg.val_top_p, execute)
            tot = common.all_reduce_sum(torch.tensor([sum(bool(e.acc) for e in eps), len(eps)], dtype=torch.float64))
            m["val/acc"] = (tot[0] / tot[1]).item()
            times["eval"] = time.time() - t0
            print0(f"step {step:5d} | val acc@{cfg.val_k} {m['val/acc']:.4f} on {len(val)} {cfg.val_bench} problems")

        # ---- rollouts with tool calls, graded
        t0 = time.time()
        batch = batch_problems(problems, step, cfg.prompts_per_step, cfg.seed)[dist.rank * per_rank:][:per_rank]
        with rank_local("rollout"):  # sampling, tools and grading: the longest rank-local phase
            eps = sample_episodes(engine, tok, batch, cfg.group_size, cfg, cfg.temperature, cfg.top_p, execute)
            engine.sleep()  # training phases: the engine's weights and KV cache leave the GPU
        times["rollout"] = time.time() - t0

        # ---- scoring: old log-probs (student) and teacher log-probs on the very same ids, by training forwards.
        # Micro-batches come from this rank's episode lengths; every rank runs as many as the busiest one (empty
        # passes), since each forward is a set of FSDP2 collectives.
        t0 = time.time()
        groups = common.pad_to_max_count(micro_batches([len(e.ids) for e in eps], cfg.micro_batch_tokens), [])
        old = score(student, eps, groups, dev, cfg.logprob_chunk)
        tea = old
        if teacher is not None:
            tea = score(teacher, eps, groups, dev, cfg.logprob_chunk)
            if hasattr(teacher, "reshard"):  # FSDP2 leaves the root gathered after a forward (for a backward): free it
                teacher.reshard()
        times["score"] = time.time() - t0

        # ---- advantages (the SOD part): padded (B, T-1) tensors aligned with the targets ids[:, 1:]
        t0 = time.time()
        mask = pad([e.mask[1:] for e in eps], 0, torch.float32)
        old_t, tea_t = pad(old, 0.0, torch.float32), pad(tea, 0.0, torch.float32)
        rewards = torch.tensor([e.score for e in eps], dtype=torch.float32)
        adv = sod_loss.sod_advantages(rewards, cfg.group_size, old_t, tea_t, mask, algo=cfg.algo,
                                      opd_coef=cfg.opd_coef, eps=cfg.sod_eps, delta=cfg.sod_delta,
                                      beta_min=cfg.beta_min, beta_max=cfg.beta_max, gamma=cfg.gamma)
        times["weights"] = time.time() - t0
        stats = sod_loss.step_stats(old_t, tea_t, mask, eps=cfg.sod_eps, delta=cfg.sod_delta)

        # ---- PPO updates: mini-batches of whole groups; each token-mean over the mini-batch's global token count;
        # micro-batches padded to the same count on every rank, as in scoring
        t0 = time.time()
        student.train()
        eps_per_mb = cfg.mini_batch_prompts // dist.world_size * cfg.group_size
        loss_sum, clip_sum, kl_sum, tok_sum, gnorms = 0.0, 0.0, 0.0, 0.0, []
        for _ in range(cfg.ppo_epochs):
            for mb0 in range(0, len(eps), eps_per_mb):
                mb = list(range(mb0, min(mb0 + eps_per_mb, len(eps))))
                n_tok = common.all_reduce_sum(mask[mb].sum().reshape(1).double()).item()
                for g in common.pad_to_max_count(micro_batches([len(eps[i].ids) for i in mb],
                                                               cfg.micro_batch_tokens), []):
                    idx = [mb[j] for j in g]
                    ids, attn = batch_tensors(eps, idx, dev)
                    lp = sequence_logprobs(student, ids, attn, cfg.logprob_chunk)
                    if not idx:
                        (lp.sum() * 0.0).backward()  # an empty pass: the same collectives, a zero gradient
                        continue
                    T = ids.size(1) - 1
                    loss, st = sod_loss.ppo_loss(lp, old_t[idx, :T].to(dev), adv[idx, :T].to(dev),
                                                 mask[idx, :T].to(dev), cfg.clip_low, cfg.clip_high,
                                                 cfg.clip_ratio_c)
                    (loss / max(n_tok / dist.world_size, 1.0)).backward()
                    k = mask[idx, :T].sum().item()
                    loss_sum, tok_sum = loss_sum + loss.item(), tok_sum + k
                    clip_sum, kl_sum = clip_sum + float(st["clip_frac"]) * k, kl_sum + float(st["approx_kl"]) * k
                gn = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)  # a DTensor under FSDP2
                gnorms.append(float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn))
                opt.step()
                opt.zero_grad(set_to_none=True)
        student.eval()
        times["update"] = time.time() - t0

        # ---- push the new weights to every rank's engine: one parameter at a time, gathered from the shards on the
        # device in the compute dtype (collective: every rank iterates the same names)
        t0 = time.time()
        engine.update_weights(common.full_params(student, push_dtype))
        times["sync"] = time.time() - t0

        # ---- telemetry: every number is reduced over ranks before rank 0 prints it
        resp = mask.sum().item()
        mism = sum(((o - torch.tensor(e.sampler_logp[1:len(o) + 1])) * torch.tensor(e.mask[1:len(o) + 1])).abs()
                   .sum().item() for o, e in zip(old, eps))
        agg = common.all_reduce_sum(torch.tensor([
            len(eps), float(rewards.sum()), sum(bool(e.acc) for e in eps), loss_sum, clip_sum, kl_sum, tok_sum,
            sum(e.num_tool_calls for e in eps), sum(e.tool_errors for e in eps), sum(e.tool_timeouts for e in eps),
            sum(e.num_turns for e in eps), sum(e.response_len for e in eps), sum(e.overlong for e in eps),
            float((stats["w"] < 0.5).sum()), float(len(stats["w"]))], dtype=torch.float64)).tolist()
        fs = failure_stats(eps, stats)
        fs = dict(zip(fs, common.all_reduce_sum(torch.tensor(list(fs.values()), dtype=torch.float64)).tolist()))
        # each rank samples with its own engine, so a rank whose engine missed an update shows here: per rank, max
        mism_ranks = torch.zeros(dist.world_size, dtype=torch.float64)
        mism_ranks[dist.rank] = mism / max(resp, 1.0)
        mism_ranks = common.all_reduce_sum(mism_ranks).tolist()
        N, calls = agg[0], max(agg[7], 1.0)
        d_q, w_q = quantiles(stats["d"].numpy()), quantiles(stats["w"].numpy())  # rank 0's steps (a sample)
        m.update(reward=agg[1] / N, acc=agg[2] / N, loss=agg[3] / max(agg[6], 1), clip_frac=agg[4] / max(agg[6], 1),
                 approx_kl=agg[5] / max(agg[6], 1), tool_calls=agg[7] / N, tool_error_rate=agg[8] / calls,
                 tool_timeout_rate=agg[9] / calls, turns=agg[10] / N, response_len=agg[11] / N, overlong=agg[12] / N,
                 mismatch=max(mism_ranks), mismatch_ranks=mism_ranks, w_lt_half=agg[13] / max(agg[14], 1),
                 d_mean=float(stats["d"].mean()) if len(stats["d"]) else 0.0, d_q=d_q,
                 w_mean=float(stats["w"].mean()) if len(stats["w"]) else 1.0, w_q=w_q,
                 grad_norm=float(np.mean(gnorms)), **{f"time/{k}": v for k, v in times.items()},
                 **{f"fail/{k}": v for k, v in fs.items()}, fail_rate=fs["failed"] / N,  # fail/*: sums, counts
                 recovery=fs["recovered"] / max(fs["failed"], 1), d_after=fs["d_after"] / max(fs["n_after"], 1),
                 d_clean=fs["d_clean"] / max(fs["n_clean"], 1), w_after=fs["w_after"] / max(fs["n_after"], 1),
                 w_clean=fs["w_clean"] / max(fs["n_clean"], 1),
                 step_time=time.time() - t_step)
        logger.log(step, m)
        if m["mismatch"] > cfg.mismatch_warn:
            print0(f"warning: step {step}: sampler vs trainer log-prob mismatch {m['mismatch']:.4f} nats/token on rank "
                   f"{mism_ranks.index(m['mismatch'])} (> mismatch_warn {cfg.mismatch_warn}): the engine may not "
                   "hold the trained weights")
        print0(f"step {step:5d} | reward {m['reward']:+.3f} acc {m['acc']:.3f} | loss {m['loss']:+.4f} clip "
               f"{m['clip_frac']:.3f} | d {m['d_mean']:.3f} w {m['w_mean']:.3f} (q10 {w_q[0]:.2f}) w<.5 "
               f"{m['w_lt_half']:.3f} | failed {m['fail_rate']:.2f} recovered {m['recovery']:.2f}, d/w after "
               f"{m['d_after']:.3f}/{m['w_after']:.2f} clean {m['d_clean']:.3f}/{m['w_clean']:.2f} | tools "
               f"{m['tool_calls']:.2f} err {m['tool_error_rate']:.2f} turns "
               f"{m['turns']:.2f} len {m['response_len']:.0f} overlong {m['overlong']:.2f} | mismatch "
               f"{m['mismatch']:.4f} | " + " ".join(f"{k} {v:.1f}s" for k, v in times.items()))

        # ---- trajectory dump (rank 0's episodes): JSONL for analysis, HTML for reading
        with rank_local("dump"):  # the others wait for rank 0's disk here, not in a collective
            if dist.is_main and cfg.dump_every and (step % cfg.dump_every == 0 or step == 1):
                report.dump(cfg.out_dir, step, eps[:cfg.dump_episodes], tok,
                            sod_loss.grpo_advantages(rewards, cfg.group_size), old, tea, stats,
                            [batch[i // cfg.group_size] for i in range(min(cfg.dump_episodes, len(eps)))])

        # ---- checkpoint
        if (cfg.save_every and step % cfg.save_every == 0) or step == max_steps:
            with runs.interrupts_held():
                common.save_checkpoint(cfg.out_dir, step, student, tok, opt, cfg,
                                       {"cursor": step * cfg.prompts_per_step}, keep_last=cfg.keep_last)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--plot":
        report.plot(sys.argv[2])
    else:
        run(main)
