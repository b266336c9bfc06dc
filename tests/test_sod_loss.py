"""Tests for sod_loss.py against slow loop references written here from the formulas of docs/algorithm.md."""
import math
import shutil

import pytest
import torch

import sod_loss

# ---------------------------------------------------------------- slow references (plain Python, float64)


def ref_steps(mask_row):
    """List of (start, end_exclusive) of the maximal runs of 1s."""
    runs, start = [], None
    for t, v in enumerate(mask_row):
        if v and start is None:
            start = t
        if not v and start is not None:
            runs.append((start, t))
            start = None
    if start is not None:
        runs.append((start, len(mask_row)))
    return runs


def ref_row(s, t, m, eps, delta):
    """Per row: step runs, d_k, w_k (the literal running product, not the telescoped form), per-token w."""
    s, t, m = s.tolist(), t.tolist(), m.tolist()
    runs = ref_steps(m)
    d = [sum(abs(s[i] - t[i]) for i in range(a, b)) / (b - a) for a, b in runs]
    w = []
    for k in range(len(runs)):
        prod = 1.0
        for u in range(k):
            prod *= (d[u] + eps) / (d[u + 1] + eps)
        w.append(1.0 if k == 0 else min(prod, 1 + delta))
    w_tok = [0.0] * len(m)
    for (a, b), wk in zip(runs, w):
        for i in range(a, b):
            w_tok[i] = wk
    return runs, d, w, w_tok


def ref_grpo(rewards, G, eps=1e-6):
    out = []
    r = rewards.tolist()
    for g in range(0, len(r), G):
        grp = r[g:g + G]
        mu = sum(grp) / G
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / (G - 1)) if G > 1 else 0.0
        out += [0.0 if max(grp) == min(grp) else (x - mu) / (sd + eps) for x in grp]
    return torch.tensor(out)


def ref_adv(rewards, G, s, t, m, algo, c=1.0, eps=1e-6, delta=0.2, bmin=0.0, bmax=1.0, gamma=1.0):
    a = ref_grpo(rewards, G).tolist()
    out = torch.zeros(s.shape, dtype=torch.float64)
    for b in range(s.shape[0]):
        _, _, _, w_tok = ref_row(s[b], t[b], m[b], eps, delta)
        beta = bmin + (bmax - bmin) / (1 + math.exp(gamma * a[b]))
        for i in range(s.shape[1]):
            if not m[b, i]:
                continue
            o = float(t[b, i]) - float(s[b, i])
            scale = {"grpo": 0.0, "opd": 1.0, "sod": w_tok[i], "gated": beta}[algo]
            out[b, i] = a[b] + c * scale * o
    return out


def ref_ppo(logp, old, adv, m, cl, ch, c=3.0):
    total = 0.0
    for b in range(logp.shape[0]):
        for i in range(logp.shape[1]):
            if m[b, i]:
                r = math.exp(float(logp[b, i]) - float(old[b, i]))
                a = float(adv[b, i])
                term = max(-a * r, -a * min(max(r, 1 - cl), 1 + ch))
                total += min(term, -a * c) if a < 0 else term  # dual clip
    return total


# ---------------------------------------------------------------- cases


def random_case(B, T, seed, prompt=True, scale=1.0):
    """Rows: optional prompt region, then alternating assistant turns (mask 1) and tool responses (mask 0), padding."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        i = int(torch.randint(1, max(2, T // 4), (1,), generator=g)) if prompt else 0
        end = T - int(torch.randint(0, max(1, T // 5), (1,), generator=g))
        on = True
        while i < end:
            n = int(torch.randint(1, 6, (1,), generator=g))
            m[b, i:min(i + n, end)] = int(on)
            i += n
            on = not on
    s = -scale * torch.rand(B, T, generator=g)
    t = -scale * torch.rand(B, T, generator=g)
    return s, t, m


def edge_cases():
    T = 8
    yield "single-token steps", torch.tensor([[1, 0, 1, 0, 1, 0, 1, 0]])
    yield "step ends at last position", torch.tensor([[0, 0, 1, 1, 0, 1, 1, 1]])
    yield "leading prompt region", torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    yield "all masked rows", torch.tensor([[0] * T, [1, 1, 0, 1, 0, 0, 1, 1], [0] * T])
    yield "B = 1 one step", torch.ones(1, T, dtype=torch.long)
    yield "float mask", torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
    yield "an odd row full of one-token steps", torch.tensor([[1, 0, 1, 0, 1, 0, 1]])  # ceil(T/2) steps, the most


# ---------------------------------------------------------------- step ids, divergence, weights


@pytest.mark.parametrize("seed", range(4))
def test_step_ids_random(seed):
    _, _, m = random_case(5, 40, seed)
    ids = sod_loss.step_ids(m)
    for b in range(m.shape[0]):
        expect = [-1] * m.shape[1]
        for k, (a, e) in enumerate(ref_steps(m[b].tolist())):
            expect[a:e] = [k] * (e - a)
        assert ids[b].tolist() == expect
    assert ids.dtype == torch.long


def test_step_ids_hand():
    m = torch.tensor([[0, 1, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0]])
    assert sod_loss.step_ids(m).tolist() == [[-1, 0, 0, -1, -1, 1, -1, 2], [0, -1, -1, -1, -1, -1, -1, -1]]


def check_weights(s, t, m, eps=1e-6, delta=0.2):
    w = sod_loss.sod_weights(s, t, m, eps=eps, delta=delta)
    assert w.dtype == torch.float32 and w.shape == m.shape and torch.isfinite(w).all()
    d, n = sod_loss.step_divergence(s, t, m)
    k_max = max((len(ref_steps(m[b].tolist())) for b in range(m.shape[0])), default=0)
    assert d.shape == n.shape == (m.shape[0], k_max)
    for b in range(m.shape[0]):
        runs, d_ref, _, w_tok = ref_row(s[b].double(), t[b].double(), m[b] != 0, eps, delta)
        torch.testing.assert_close(w[b].double(), torch.tensor(w_tok, dtype=torch.float64), rtol=1e-5, atol=1e-6)
        K = len(runs)
        torch.testing.assert_close(d[b, :K].double(), torch.tensor(d_ref, dtype=torch.float64), rtol=1e-5, atol=1e-6)
        assert n[b, :K].tolist() == [e - a for a, e in runs]
        assert (d[b, K:] == 0).all() and (n[b, K:] == 0).all()
    return w


@pytest.mark.parametrize("seed", range(6))
def test_weights_random(seed):
    s, t, m = random_case(6, 50, seed, prompt=seed % 2 == 0)
    check_weights(s, t, m)


@pytest.mark.parametrize("name,m", list(edge_cases()))
def test_weights_edge_cases(name, m):
    g = torch.Generator().manual_seed(0)
    s, t = -torch.rand(m.shape, generator=g), -torch.rand(m.shape, generator=g)
    check_weights(s, t, m)


def test_hand_computed_weights():
    # three steps: d = 0.1, 0.4 (erroneous: drifted), 0.05 (recovery: back below the first step, capped at 1.2)
    m = torch.tensor([[0, 1, 1, 0, 1, 0, 1, 1]])
    s = torch.zeros(1, 8)
    t = -torch.tensor([[9.0, 0.1, 0.1, 9.0, 0.4, 9.0, 0.05, 0.05]])
    w = sod_loss.sod_weights(s, t, m, eps=1e-6, delta=0.2)[0]
    expect = [0, 1, 1, 0, (0.1 + 1e-6) / (0.4 + 1e-6), 0, 1.2, 1.2]
    torch.testing.assert_close(w, torch.tensor(expect), rtol=1e-5, atol=1e-7)


def test_identical_teacher_all_ones():
    s, _, m = random_case(4, 30, 1)
    w = sod_loss.sod_weights(s, s.clone(), m)
    assert torch.equal(w, (m != 0).float())
    d, _ = sod_loss.step_divergence(s, s.clone(), m)
    assert (d == 0).all()


def test_delta_zero_caps_at_one():
    s, t, m = random_case(5, 40, 2)
    w = check_weights(s, t, m, delta=0.0)
    assert w.max() <= 1.0


@pytest.mark.parametrize("scale", [1e-7, 1e4])
def test_extreme_divergences(scale):
    s, t, m = random_case(4, 40, 3, scale=scale)
    check_weights(s, t, m)


def test_padding_values_do_not_leak():
    s, t, m = random_case(3, 30, 4)
    s2, t2 = s.masked_fill(m == 0, float("nan")), t.masked_fill(m == 0, -float("inf"))
    assert torch.equal(sod_loss.sod_weights(s2, t2, m), sod_loss.sod_weights(s, t, m))


def test_low_precision_inputs_give_float32():
    s, t, m = random_case(3, 30, 5)
    w = sod_loss.sod_weights(s.bfloat16(), t.half(), m.bool())
    assert w.dtype == torch.float32
    check_weights(s.bfloat16().float(), t.half().float(), m)


def test_step_stats():
    s, t, m = random_case(4, 40, 6)
    m[2] = 0  # a row without response tokens contributes no step
    st = sod_loss.step_stats(s, t, m, eps=1e-6, delta=0.2)
    rows, turns, ds, ws, ns = [], [], [], [], []
    for b in range(4):
        runs, d, w, _ = ref_row(s[b].double(), t[b].double(), m[b] != 0, 1e-6, 0.2)
        rows += [b] * len(runs)
        turns += list(range(len(runs)))
        ds += d
        ws += w
        ns += [e - a for a, e in runs]
    assert st["row"].tolist() == rows and st["turn"].tolist() == turns and st["n_tokens"].tolist() == ns
    torch.testing.assert_close(st["d"].double(), torch.tensor(ds, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st["w"].double(), torch.tensor(ws, dtype=torch.float64), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- advantages


def test_grpo_hand_and_edges():
    a = sod_loss.grpo_advantages(torch.tensor([1.0, -1.0, -1.0, -1.0]), 4)
    std = 1.0  # mean -0.5, deviations 1.5, -0.5 x3: unbiased variance (2.25 + 3 * 0.25) / 3 = 1
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5]) / (std + 1e-6))
    assert torch.equal(sod_loss.grpo_advantages(torch.full((6,), 0.1), 3), torch.zeros(6))  # constant: exactly 0
    assert torch.equal(sod_loss.grpo_advantages(torch.tensor([0.3, -1.0, 5.0]), 1), torch.zeros(3))  # G = 1
    r = torch.randn(24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sod_loss.grpo_advantages(r, 8), ref_grpo(r, 8))
    torch.testing.assert_close(sod_loss.grpo_advantages(r, 8), ((r.view(3, 8) - r.view(3, 8).mean(1, keepdim=True))
                                                                / (r.view(3, 8).std(1, keepdim=True) + 1e-6)).view(-1))
    torch.testing.assert_close(sod_loss.grpo_advantages(r, 8, norm_by_std=False),
                               (r.view(3, 8) - r.view(3, 8).mean(1, keepdim=True)).view(-1))


@pytest.mark.parametrize("algo", sod_loss.ALGOS)
def test_sod_advantages_vs_reference(algo):
    s, t, m = random_case(8, 30, 7)
    m[5] = 0
    r = torch.tensor([1.0, -1.0, 1.0, 1.0, -0.6, -1.0, -1.0, -1.0])
    s.requires_grad_(True)
    adv = sod_loss.sod_advantages(r, 4, s, t, m, algo=algo, opd_coef=0.7, eps=1e-6, delta=0.3,
                                  beta_min=0.1, beta_max=0.9, gamma=2.0)
    assert not adv.requires_grad and adv.dtype == torch.float32
    expect = ref_adv(r, 4, s.detach().double(), t.double(), m, algo, c=0.7, delta=0.3, bmin=0.1, bmax=0.9, gamma=2.0)
    torch.testing.assert_close(adv.double(), expect, rtol=1e-5, atol=1e-6)


def test_sod_advantages_bad_algo():
    s, t, m = random_case(2, 10, 0)
    with pytest.raises(ValueError, match="grpo, opd, sod, gated"):
        sod_loss.sod_advantages(torch.zeros(2), 2, s, t, m, algo="ppo")


# ---------------------------------------------------------------- PPO loss


def ppo_case(B=4, T=20, seed=0):
    s, _, m = random_case(B, T, seed)
    g = torch.Generator().manual_seed(seed + 100)
    old = s.clone()
    logp = (s + 0.4 * torch.randn(B, T, generator=g)).requires_grad_(True)  # ratios well outside the clip range
    adv = torch.randn(B, T, generator=g)
    return logp, old, adv, m


def test_ppo_loss_vs_reference_and_stats():
    logp, old, adv, m = ppo_case()
    loss, st = sod_loss.ppo_loss(logp, old, adv, m, clip_low=0.2, clip_high=0.28)
    assert math.isclose(loss.item(), ref_ppo(logp.detach(), old, adv, m, 0.2, 0.28), rel_tol=1e-5)
    sel = m != 0
    lr = (logp.detach() - old)[sel]
    r, a = lr.exp(), adv[sel]
    clipped = -a * r.clamp(0.8, 1.28) > -a * r
    assert math.isclose(st["clip_frac"].item(), clipped.float().mean().item(), rel_tol=1e-6)
    assert 0 < st["clip_frac"].item() < 1
    assert math.isclose(st["approx_kl"].item(), (r - 1 - lr).mean().item(), rel_tol=1e-5)
    assert math.isclose(st["ratio_mean"].item(), r.mean().item(), rel_tol=1e-6)
    assert st["ratio_max"].item() == r.max().item()
    assert all(not v.requires_grad for v in st.values())


def test_ppo_dual_clip_hand_computed():
    # (A, ρ) per token and the term by hand: max(-Aρ, -A clip(ρ, 0.8, 1.28)), then min(., -3A) where A < 0
    cases = [(-1.0, 4.0, 3.0),  # max(4, 1.28) = 4, capped at 3: no gradient
             (-1.0, 2.0, 2.0),  # below the cap
             (-2.0, 0.5, 1.6),  # max(1.0, 1.6): the lower clip, far below the cap 6
             (1.0, 4.0, -1.28),  # A > 0: clip-higher only, never the dual clip
             (0.5, 0.5, -0.25)]
    a = torch.tensor([[c[0] for c in cases]])
    old = torch.zeros_like(a)
    logp = torch.tensor([[math.log(c[1]) for c in cases]], requires_grad=True)
    loss, _ = sod_loss.ppo_loss(logp, old, a, torch.ones_like(a))
    assert loss.item() == pytest.approx(sum(c[2] for c in cases), abs=1e-6)
    loss.backward()
    # d/dlogp of -Aρ is -Aρ where that side is taken, 0 where a clip is
    assert logp.grad[0].tolist() == pytest.approx([0.0, 2.0, 0.0, 0.0, -0.25], abs=1e-6)
    loss, _ = sod_loss.ppo_loss(logp, old, a, torch.ones_like(a), clip_ratio_c=10.0)  # a looser cap
    assert loss.item() == pytest.approx(sum(c[2] for c in cases) + 1.0, abs=1e-6)


def test_ppo_ratio_max_when_every_ratio_is_below_one():
    logp = torch.log(torch.tensor([[0.5, 0.9, 0.3]]))
    _, st = sod_loss.ppo_loss(logp, torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([[1, 1, 0]]))
    assert st["ratio_max"].item() == pytest.approx(0.9)  # the largest on the mask, not the fill of masked tokens


def test_ppo_masked_tokens_get_zero_grad():
    logp, old, adv, m = ppo_case(seed=1)
    poisoned = torch.where(m != 0, logp, torch.full_like(logp, float("nan")))  # padding log-probs may be anything
    old = old.masked_fill(m == 0, float("inf"))
    loss, _ = sod_loss.ppo_loss(poisoned, old, adv, m)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert (logp.grad[m == 0] == 0).all() and (logp.grad[m != 0] != 0).any()


def test_micro_batches_with_global_count_equal_one_batch():
    logp, old, adv, m = ppo_case(B=6, T=24, seed=2)
    total = (m != 0).sum()
    whole, _ = sod_loss.ppo_loss(logp, old, adv, m)
    (whole / total).backward()
    g_whole = logp.grad.clone()
    logp.grad = None
    parts = 0.0
    for rows in (slice(0, 2), slice(2, 6)):  # uneven micro-batches, each divided by the GLOBAL token count
        part, _ = sod_loss.ppo_loss(logp[rows], old[rows], adv[rows], m[rows])
        (part / total).backward()
        parts += part.item()
    torch.testing.assert_close(torch.tensor(parts), whole.detach())
    torch.testing.assert_close(logp.grad, g_whole)


def test_ppo_empty_mask():
    logp, old, adv, m = ppo_case(seed=3)
    loss, st = sod_loss.ppo_loss(logp, old, adv, torch.zeros_like(m))
    assert loss.item() == 0.0 and all(torch.isfinite(v) for v in st.values())


# ---------------------------------------------------------------- token_logprobs


def naive_logprobs(h, w, y):
    return torch.log_softmax((h @ w.T).float(), dim=-1).gather(-1, y[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_token_logprobs_matches_naive(chunk):
    g = torch.Generator().manual_seed(chunk)
    B, T, H, V = 3, 11, 16, 50
    h = torch.randn(B, T, H, generator=g, requires_grad=True)
    w = torch.randn(V, H, generator=g, requires_grad=True)
    y = torch.randint(0, V, (B, T), generator=g)
    up = torch.randn(B, T, generator=g)  # a non-uniform upstream gradient, as from a per-token PPO loss
    out = sod_loss.token_logprobs(h, w, y, chunk_size=chunk)
    (out * up).sum().backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = naive_logprobs(h, w, y)
    (ref * up).sum().backward()
    assert out.dtype == torch.float32 and out.shape == (B, T)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gh, h.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-5)


def test_token_logprobs_bf16_and_partial_grads():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 9, 16, generator=g).bfloat16()
    w = torch.randn(40, 16, generator=g).bfloat16().requires_grad_(True)  # hidden frozen, weight trained
    y = torch.randint(0, 40, (2, 9), generator=g)
    out = sod_loss.token_logprobs(h, w, y, chunk_size=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive_logprobs(h.float(), w.detach().float(), y), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert w.grad.dtype == torch.bfloat16 and h.grad is None
    wf = w.detach().float().requires_grad_(True)
    naive_logprobs(h.float(), wf, y).sum().backward()
    torch.testing.assert_close(w.grad.float(), wf.grad, rtol=5e-2, atol=5e-2)
    with torch.no_grad():  # the scoring path: no graph, same values
        torch.testing.assert_close(sod_loss.token_logprobs(h, w, y, chunk_size=5), out.detach())


def test_token_logprobs_bf16_inputs_give_fp32_logits():
    # logits at the magnitudes of a real LM head (10-40), where bf16's spacing is 0.06-0.25: the reference is the
    # float64 log-softmax of the very same bf16 values, so only fp32 rounding may separate us from it
    g = torch.Generator().manual_seed(0)
    N, H, V = 64, 64, 3000
    h = (torch.randn(N, H, generator=g) * 2.0).bfloat16()
    w = (torch.randn(V, H, generator=g) * 0.5).bfloat16()
    y = torch.randint(0, V, (1, N), generator=g)
    logits64 = h.double() @ w.double().T
    assert logits64.abs().max() > 16  # the range where bf16 rounding is coarse
    ref = torch.log_softmax(logits64, -1).gather(-1, y[0, :, None])[:, 0]
    out = sod_loss.token_logprobs(h[None], w, y, chunk_size=16)[0]
    # fp32: each logit is a sum of 64 exact products (relative error ~64 * 6e-8), then a logsumexp of 3000 terms,
    # so |error| stays ~1e-5 at magnitudes ~40; bf16 logits would be off by up to half a spacing (0.125)
    assert (out.double() - ref).abs().max() < 1e-4
    bf16_path = torch.log_softmax((h @ w.T).double(), -1).gather(-1, y[0, :, None])[:, 0]
    assert (bf16_path - ref).abs().max() > 1e-2  # what the test would catch: logits rounded to bf16 first


def test_fp32_logits_gpu_branch_is_an_fp32_output_matmul():
    # the non-CPU branch (an fp32-output bf16 matmul) checked for shape and dtype on the meta device
    h = torch.empty(5, 16, dtype=torch.bfloat16, device="meta")
    w = torch.empty(40, 16, dtype=torch.bfloat16, device="meta")
    out = sod_loss._fp32_logits(h, w)
    assert out.dtype == torch.float32 and out.shape == (5, 40)


# ---------------------------------------------------------------- compiled path


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("g++") is None, reason="no C compiler for inductor")
def test_compiled_matches_eager(monkeypatch):
    monkeypatch.setattr(sod_loss, "COMPILE", True)
    monkeypatch.setattr(sod_loss, "_compiled", None)
    for B, T, seed in [(5, 40, 0), (3, 57, 1)]:  # two shapes: dynamic compile, no recompile per batch
        s, t, m = random_case(B, T, seed)
        w_c = sod_loss.sod_weights(s, t, m)
        if sod_loss._compiled is False:
            pytest.skip("torch.compile unavailable here (fell back to eager)")
        monkeypatch.setattr(sod_loss, "COMPILE", False)
        w_e = sod_loss.sod_weights(s, t, m)
        monkeypatch.setattr(sod_loss, "COMPILE", True)
        torch.testing.assert_close(w_c, w_e, rtol=1e-6, atol=0)
        check_weights(s, t, m)
