"""sod_loss.py: the SOD objective as pure tensor functions (docs/algorithm.md). Read this file first.

A rollout is one sequence prompt + response. response_mask[t] = 1 on tokens the policy sampled (assistant turns,
each turn's end-of-turn token included) and 0 on prompt, tool responses and padding. A *step* is one maximal run of
mask == 1, i.e. one assistant turn: tool responses separate steps. s_t / τ_t are the student / teacher log-probs
of the sampled token. Shapes: B sequences, T tokens, K steps, V vocab, H hidden, N = B*G rollouts in groups of G.

    d_k = mean_{t in step k} |s_t - τ_t|                               step divergence
    w_1 = 1,  w_k = min( Π_{u<k} (d_u+ε)/(d_{u+1}+ε), 1+δ )              step weight (k >= 2)
    o_t = τ_t - s_t                                                     OPD signal (sampled-token reverse KL)
    A_t = A_i + c · w_{k(t)} · o_t,   A_i = (r_i - mean_G r) / (std_G r + ε')   GRPO + weighted distillation
    loss = Σ_t max(-A_t ρ_t, -A_t clip(ρ_t, 1-ε_low, 1+ε_high)),   ρ_t = exp(logp_t - old_logp_t)
           (capped at -A_t c where A_t < 0: dual clip, c = 3)

Everything is vectorised (no Python loop over rows or steps) and runs where the inputs live. The step-weight kernel
has an optional torch.compile path: set `sod_loss.COMPILE = True` (compiled lazily on first use; a failure prints one
line and the eager kernel, which computes the same numbers, takes over).

    python -m pytest -q tests/test_sod_loss.py      # checks against slow loop references
    python bench/bench_sod_loss.py [--small]        # speed and memory ratios vs the naive ways
"""
import torch

# Run the step-weight kernel through torch.compile. Meant for CUDA, where Inductor has scan kernels to fuse the step
# numbering with its neighbours; its CPU backend has none and falls back to ATen for the cumsum and the scatter-add,
# which measures slower than eager (bench/bench_sod_loss.py), so it is off by default.
COMPILE = False
_compiled = None  # the compiled kernel once built, False once compiling has failed


def _step_number(m):
    """bool (B, T) -> long (B, T): 1-based number of the step a token is in or follows, 0 before the first step.
    A step starts on every rising edge of the mask; a running count of the edges numbers the steps within each row,
    so there is no loop over rows or steps. (int32 for the scan: half the memory traffic of int64.)"""
    prev = torch.cat([torch.zeros_like(m[:, :1]), m[:, :-1]], dim=1)  # the row's first token has no predecessor
    return (m & ~prev).to(torch.int32).cumsum(dim=1, dtype=torch.int32).long()


def _step_kernel(s, t, m, eps: float, delta: float):
    """float32 s, t and bool m, all (B, T) -> (c, d, n, w_step, w). c is _step_number(m). d, n, w_step are (B, K1):
    column k >= 1 holds step k's divergence, token count and weight (column 0 is a dump for the tokens before the
    first step). K1 = ceil(T/2) + 1 bounds the step count (steps are separated by at least one masked token), so K
    is never read back from the device, which would be a host sync. w is the per-token step weight, 0 off the mask."""
    c = _step_number(m)
    k1 = (s.shape[1] + 1) // 2 + 1
    # A masked token carries the number of the step before it but adds 0 to both sums, so it needs no index of its
    # own. where, not *: log-probs of padding may be inf/nan.
    div = torch.where(m, (s - t).abs(), 0.0)
    n = s.new_zeros(s.shape[0], k1).scatter_add_(1, c, m.to(s.dtype))
    d = s.new_zeros(s.shape[0], k1).scatter_add_(1, c, div) / n.clamp(min=1)  # d_k = mean |s - τ| over step k
    # The product telescopes: (d_1+ε)/(d_2+ε) · (d_2+ε)/(d_3+ε) ··· (d_{k-1}+ε)/(d_k+ε) = (d_1+ε)/(d_k+ε), each
    # numerator cancels the previous denominator. So w_k compares step k with the first step only (the turn before
    # any tool output could push the student off the teacher's distribution), one division per step, no running
    # product and no rounding accumulated over many steps:
    #   erroneous step: d_k > d_1 (e.g. after a failed tool call) -> w_k < 1, the teacher's unreliable token signal
    #                   is damped in proportion to the drift; no floor, so a step 100x off gets ~1/100;
    #   recovery step:  d_k back down to <= d_1 -> full weight at once, whatever happened in between, capped at 1+δ
    #                   so that a near-zero d_k cannot blow the weight up to (d_1+ε)/ε;
    #   stable step:    d_k ≈ d_1 -> w_k ≈ 1, plain OPD.
    # w_1 = (d_1+ε)/(d_1+ε) is exactly 1 in floating point, and the cap 1+δ >= 1 leaves it there.
    w_step = ((d[:, 1:2] + eps) / (d + eps)).clamp(max=1.0 + delta)
    return c, d, n, w_step, torch.where(m, w_step.gather(1, c), 0.0)


def _steps(student_logp, teacher_logp, response_mask, eps, delta):
    """Casts to float32 / bool and runs the step kernel, compiled when COMPILE is set and compiling works."""
    global _compiled
    assert student_logp.shape == teacher_logp.shape == response_mask.shape and student_logp.dim() == 2
    assert eps > 0 and delta >= 0, "ε > 0 keeps (d_1+ε)/(d_k+ε) finite, δ >= 0 keeps w_1 = 1"
    args = (student_logp.detach().float(), teacher_logp.detach().float(), response_mask != 0, float(eps), float(delta))
    if COMPILE and _compiled is not False:
        try:
            if _compiled is None:
                _compiled = torch.compile(_step_kernel, dynamic=True)  # dynamic: B and T change every step
            return _compiled(*args)
        except Exception as e:  # a missing compiler or an unsupported backend must not stop training
            print(f"sod_loss: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}), using eager")
            _compiled = False
    return _step_kernel(*args)


def step_ids(response_mask):
    """(B, T) 0/1 mask of any dtype -> (B, T) long: 0-based step index per token, -1 where mask == 0."""
    assert response_mask.dim() == 2
    m = response_mask != 0
    return torch.where(m, _step_number(m) - 1, -1)


def step_divergence(student_logp, teacher_logp, response_mask):
    """(B, T) x3 -> (d, n_tokens), both (B, K_max): d float32 mean |s - τ| per step, n_tokens long; zero-padded past
    a row's last step. K_max is read from the device once (the only host sync)."""
    c, d, n, _, _ = _steps(student_logp, teacher_logp, response_mask, 1.0, 0.0)
    k_max = int(c.max()) if c.numel() else 0
    return d[:, 1:k_max + 1], n[:, 1:k_max + 1].long()


def sod_weights(student_logp, teacher_logp, response_mask, eps=1e-6, delta=0.2):
    """(B, T) x3 -> (B, T) float32 step weight w_{k(t)} per token, 0 where masked. No host sync."""
    return _steps(student_logp, teacher_logp, response_mask, eps, delta)[4]


def step_stats(student_logp, teacher_logp, response_mask, eps=1e-6, delta=0.2):
    """Telemetry: one entry per step of the batch, as flat CPU tensors in a dict: row (sequence index), turn (step
    index within its row, 0-based), d (float32 d_k), w (float32 w_k), n_tokens (long). One device->host copy."""
    _, d, n, w, _ = _steps(student_logp, teacher_logp, response_mask, eps, delta)
    d, n, w = torch.stack([d, n, w])[:, :, 1:].cpu()
    valid = n > 0  # a column is a real step iff it has tokens
    rows, turns = valid.nonzero(as_tuple=True)
    return dict(row=rows, turn=turns, d=d[valid], w=w[valid], n_tokens=n[valid].long())


def grpo_advantages(rewards, group_size: int, norm_by_std=True, eps=1e-6):
    """(N,) rewards, consecutive groups of G = group_size rollouts of one prompt -> (N,) float32 detached:
    A_i = (r_i - mean_G r) / (std_G r + ε), std unbiased (as torch.std). A group whose rewards are all equal carries
    no preference, so its advantages are exactly 0 (not rounding noise / ε); this covers G = 1 as well."""
    r = rewards.detach().float()
    assert r.dim() == 1 and group_size >= 1 and r.numel() % group_size == 0, (tuple(r.shape), group_size)
    r = r.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if norm_by_std:  # unbiased variance by hand: torch.std warns and returns nan for G = 1
        centred = centred / ((centred.square().sum(dim=1, keepdim=True) / max(group_size - 1, 1)).sqrt() + eps)
    constant = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)
    return torch.where(constant, 0.0, centred).view(-1)


ALGOS = ("grpo", "opd", "sod", "gated")


def sod_advantages(rewards, group_size, student_logp, teacher_logp, response_mask, algo="sod", opd_coef=1.0,
                   eps=1e-6, delta=0.2, beta_min=0.0, beta_max=1.0, gamma=1.0):
    """(N,) rewards and (B=N, T) log-probs / mask -> (B, T) float32 detached per-token advantage, 0 where masked.
        grpo:  A_t = A_i                      (outcome reward only, c = 0)
        opd:   A_t = A_i + c · o_t            (every step trusted, w ≡ 1)
        sod:   A_t = A_i + c · w_{k(t)} · o_t
        gated: A_t = A_i + c · β_i · o_t,  β_i = β_min + (β_max - β_min) · sigmoid(-γ A_i)  (legacy gate: trust the
               teacher more on rollouts that did worse than their group, per rollout rather than per step)"""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}")
    m = response_mask != 0
    a_i = grpo_advantages(rewards, group_size).to(m.device)[:, None]  # broadcast each rollout's A_i over its tokens
    assert a_i.shape[0] == m.shape[0], "one reward per sequence"
    adv = a_i.expand(m.shape)
    if algo != "grpo":
        # o_t: log-ratio of teacher to student on the token the student sampled; > 0 where the teacher likes the
        # token more, so adding it to the advantage pushes the student toward the teacher (reverse KL, one sample)
        o = teacher_logp.detach().float() - student_logp.detach().float()
        if algo == "sod":
            o = o * sod_weights(student_logp, teacher_logp, response_mask, eps, delta)
        elif algo == "gated":
            o = o * (beta_min + (beta_max - beta_min) * torch.sigmoid(-gamma * a_i))
        adv = adv + opd_coef * o
    return torch.where(m, adv, 0.0)


def ppo_loss(logp, old_logp, advantages, response_mask, clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0):
    """(B, T) x4 -> (loss_sum, stats). loss_sum is the clipped surrogate SUMMED over response tokens: the caller
    divides by the token count of the whole global batch (all micro-batches, all ranks), so every token weighs the
    same whatever sequence or micro-batch it sits in. stats: detached 0-dim float32 tensors (no host sync) averaged
    over response tokens: clip_frac, approx_kl (k3 estimator of KL(old || new)), ratio_mean; and ratio_max."""
    m = response_mask != 0
    # where, not *: off the mask the ratio is exactly 1, so padding with inf/nan log-probs cannot leak nan into the
    # sum or the gradient, and masked tokens get exactly zero gradient
    log_ratio = torch.where(m, logp.float() - old_logp.detach().float(), 0.0)
    ratio = log_ratio.exp()
    adv = advantages.detach().float()
    # clip-higher: a wider upper bound (1 + clip_high) lets low-probability tokens with A > 0 grow faster, which keeps
    # exploration alive; the pessimistic max() removes the incentive to move the ratio past the bounds
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    # dual clip (Ye et al. 2020; verl's compute_policy_loss_vanilla with clip_ratio_c = 3, what the paper's run used):
    # for A < 0 the pessimistic max grows with ρ without bound, so a bad token the policy has already made far likelier
    # (ρ > c) would dominate the batch; its term is capped at -A·c, where it carries no gradient
    loss = torch.maximum(unclipped, clipped)
    loss = torch.where(adv < 0, torch.minimum(loss, -adv * clip_ratio_c), loss)
    loss_sum = torch.where(m, loss, 0.0).sum()
    with torch.no_grad():
        count = m.sum().clamp(min=1).float()
        mean = lambda x: torch.where(m, x, 0.0).sum() / count
        stats = dict(clip_frac=mean((clipped > unclipped).float()), approx_kl=mean(ratio - 1.0 - log_ratio),
                     ratio_mean=mean(ratio), ratio_max=torch.where(m, ratio, 0.0).amax())
    return loss_sum, stats


def _fp32_logits(h, weight):
    """(N, H) @ (V, H)ᵀ -> (N, V) float32. With bf16 inputs the products are exact in fp32 and summed in fp32; a bf16
    matmul would round the logits to bf16 first (spacing 0.06-0.25 at magnitudes 10-40), an error that would enter
    every log-prob, d_k, the PPO ratio and the mismatch metric. On GPU an fp32-output matmul keeps the bf16 kernels'
    speed; on CPU (tests, the toy) the inputs are upcast."""
    if h.dtype == weight.dtype == torch.float32:
        return h @ weight.T
    if h.device.type == "cpu":
        return h.float() @ weight.float().T
    assert h.dtype == weight.dtype, (h.dtype, weight.dtype)
    return torch.mm(h, weight.T, out_dtype=torch.float32)


class _ChunkedLogprobs(torch.autograd.Function):
    """log p(target) = h·W[y] - logsumexp(h·Wᵀ) per token, one chunk of tokens at a time. Only the per-token
    logsumexp (N floats) is kept for backward, which recomputes each chunk's logits: one extra matmul buys a peak of
    one (chunk, V) fp32 block instead of (N, V), which at V = 151,936 is the difference between fitting and not."""

    @staticmethod
    def forward(ctx, h, weight, y, chunk):
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        lse = torch.empty_like(out)
        for i in range(0, h.shape[0], chunk):  # a loop over chunks of tokens, not rows: its length is N / chunk
            logits = _fp32_logits(h[i:i + chunk], weight)  # the softmax over 152k entries runs in fp32 too
            target = logits.gather(1, y[i:i + chunk, None]).squeeze(1)
            # logsumexp in place (max-shifted for range), so the chunk holds one (chunk, V) block, not two
            top = logits.amax(dim=1, keepdim=True)
            lse[i:i + chunk] = logits.sub_(top).exp_().sum(dim=1).log_() + top.squeeze(1)
            out[i:i + chunk] = target - lse[i:i + chunk]
            del logits  # free this chunk's block before the next one is allocated, or the two overlap at the peak
        ctx.save_for_backward(h, weight, y, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, g):
        h, weight, y, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[:2]
        dh = torch.empty_like(h) if need_h else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None  # fp32 sum
        for i in range(0, h.shape[0], ctx.chunk):
            hc, gc = h[i:i + ctx.chunk], g[i:i + ctx.chunk].float()
            # d log p_y / d logits = onehot(y) - softmax(logits), scaled by the incoming gradient of each token
            glog = _fp32_logits(hc, weight).sub_(lse[i:i + ctx.chunk, None]).exp_().mul_(-gc[:, None])
            glog.scatter_add_(1, y[i:i + ctx.chunk, None], gc[:, None])
            glog = glog.to(h.dtype)
            if need_h:
                dh[i:i + ctx.chunk] = glog @ weight
            if need_w:
                if glog.dtype == torch.float32:
                    dw.addmm_(glog.T, hc)
                else:  # low-precision matmul per chunk, partial sums accumulated in fp32 across chunks
                    dw.add_(glog.T @ hc)
            del glog  # as in forward: one (chunk, V) block alive at a time
        return dh, dw.to(weight.dtype) if need_w else None, None, None


def token_logprobs(hidden, lm_head_weight, targets, chunk_size=512):
    """hidden (B, T, H), lm_head_weight (V, H), targets (B, T) long -> (B, T) float32 log p(targets | hidden), with the
    exact gradient for hidden and weight. Chunks of chunk_size tokens: never builds (B, T, V) in fp32."""
    B, T, H = hidden.shape
    assert lm_head_weight.shape[1] == H and targets.shape == (B, T) and chunk_size >= 1
    out = _ChunkedLogprobs.apply(hidden.reshape(B * T, H), lm_head_weight, targets.reshape(B * T), chunk_size)
    return out.view(B, T)
