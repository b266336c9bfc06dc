"""The toy (toy.py, toy.sh, docs/toy.md): its problems and their train/eval split, the failure-mode statistics of
train_sod on hand-made episodes, and the numbers toy.sh's summary and table print against the eval JSONs."""
import pytest
import torch

import rollout
import sod_loss
import train_sod

# -----------------------------------------------------------------------------
# failure-mode statistics (issue 24, item 4)


def episode(step_tokens, statuses, acc):
    """An Episode of 2 prompt tokens, then each assistant step's tokens (mask 1) with one tool-output token (mask 0)
    after every step but the last; turn k's tool calls returned `statuses[k]`."""
    mask = [0, 0]
    for k, n in enumerate(step_tokens):
        mask += [1] * n + ([0] if k < len(step_tokens) - 1 else [])
    ep = rollout.Episode([1, 2], list(range(len(mask))), mask, [0.0] * len(mask))
    ep.turns = [{"text": "", "calls": [], "observations": [], "status": s} for s in statuses]
    ep.acc = acc
    return ep


def logprobs(ep, gaps):
    """(student, teacher) log-probs aligned with the targets ids[1:]: the student's all -1, the teacher's -1 - gap
    on each assistant token (gaps: one list per step), so |s - τ| on a step's tokens is exactly its gaps."""
    s = torch.full((len(ep.ids) - 1,), -1.0)
    t = s.clone()
    pos = [i - 1 for i, m in enumerate(ep.mask) if m]
    flat = [g for step in gaps for g in step]
    assert len(pos) == len(flat)
    t[pos] = -1.0 - torch.tensor(flat)
    return s, t


def test_failure_stats_on_hand_made_episodes():
    gaps = [[[0.5, 0.5], [2.0, 1.0], [1.0]],  # fails at turn 0, recovers: d = 0.5, 1.5, 1.0
            [[0.2, 0.2], [0.1]],  # no failure: d = 0.2, 0.1
            [[0.4], [0.4, 0.4], [0.8, 0.8]]]  # fails at turn 1 (a malformed call), ends wrong: d = 0.4, 0.4, 0.8
    eps = [episode([2, 2, 1], [["error"], ["ok"], []], True),
           episode([2, 1], [["ok"], []], False),
           episode([1, 2, 2], [["ok"], ["ok", "malformed"], []], False)]
    lps = [logprobs(e, g) for e, g in zip(eps, gaps)]
    mask = train_sod.pad([e.mask[1:] for e in eps], 0, torch.float32)
    s, t = (train_sod.pad([lp[j] for lp in lps], 0.0, torch.float32) for j in (0, 1))
    stats = sod_loss.step_stats(s, t, mask, eps=1e-6, delta=0.2)
    got = train_sod.failure_stats(eps, stats)
    eps_ = 1e-6
    w = lambda d1, dk: min((d1 + eps_) / (dk + eps_), 1.2)
    # after a failure: episode 0's steps 2 and 3, episode 2's step 3 (its failing step 2 and step 1 are neither)
    want_after = dict(n=3, d=1.5 + 1.0 + 0.8, w=w(0.5, 1.5) + w(0.5, 1.0) + w(0.4, 0.8))
    want_clean = dict(n=2, d=0.2 + 0.1, w=1.0 + w(0.2, 0.1))  # w(0.2, 0.1) hits the cap 1.2
    assert got["failed"] == 2 and got["recovered"] == 1
    for side, want in (("after", want_after), ("clean", want_clean)):
        assert got[f"n_{side}"] == want["n"]
        assert got[f"d_{side}"] == pytest.approx(want["d"], abs=1e-5)
        assert got[f"w_{side}"] == pytest.approx(want["w"], abs=1e-5)
    assert train_sod.first_failure(eps[2]) == 1 and train_sod.first_failure(eps[1]) is None


def test_trajectory_page_shows_question_truth_failures_and_the_steps_after_them(tmp_path):
    import models
    import report
    eps = [episode([2, 2, 1], [["error"], ["ok"], []], True), episode([2, 1], [["ok"], []], False)]
    gaps = [[[0.5, 0.5], [2.0, 1.0], [1.0]], [[0.2, 0.2], [0.1]]]
    for e in eps:
        e.score, e.pred, e.response_text = 1.0, "42", ""
    lps = [logprobs(e, g) for e, g in zip(eps, gaps)]
    mask = train_sod.pad([e.mask[1:] for e in eps], 0, torch.float32)
    s, t = (train_sod.pad([lp[j] for lp in lps], 0.0, torch.float32) for j in (0, 1))
    stats = sod_loss.step_stats(s, t, mask)
    probs = [{"question": "What is 6 * 7?", "ground_truth": "42"}, {"question": "What is 2 + 2?", "ground_truth": "4"}]
    report.dump(str(tmp_path), 3, eps, models.make_toy_tokenizer(), torch.zeros(2), [x[0] for x in lps],
                [x[1] for x in lps], stats, probs)
    page = (tmp_path / "samples" / "step_000003.html").read_text()
    assert "What is 6 * 7?" in page and "ground truth <b>42</b>" in page and "What is 2 + 2?" in page
    assert page.count("class='c f'") == 1  # the one failed call's output, marked
    assert page.count("(after a failed call)") == 2  # episode 0's steps 2 and 3, not its step 1, not episode 1's
    assert "step 2 (after a failed call): d=1.5000 w=0.333" in page
    assert "first failed call in step 1; 2 step(s) after it, mean d 1.250, mean w 0.417" in page
    rows = [__import__("json").loads(x) for x in (tmp_path / "samples" / "step_000003.jsonl").read_text().split("\n")
            if x]
    assert [r["first_failure"] for r in rows] == [0, None] and rows[1]["ground_truth"] == "4"
