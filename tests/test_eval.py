import itertools
import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest

import eval as ev


def rec(pid, j, acc, pred=None, **kw):
    base = dict(problem_id=pid, sample=j, acc=acc, pred=pred, num_tool_calls=0, tool_errors=0, tool_timeouts=0,
                num_turns=1, response_len=10, overlong=False)
    return base | kw

# -----------------------------------------------------------------------------
# pass@k against its definition


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_subset_enumeration(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            assert ev.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_matches_exact_binomials_for_large_n():
    for n, c, k in [(1000, 3, 500), (200, 1, 1), (200, 0, 50), (64, 60, 8), (5000, 17, 32), (100, 99, 2)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert ev.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-10, abs=1e-15)
    assert ev.pass_at_k(32, 5, 1) == pytest.approx(5 / 32)  # pass@1 is the plain success rate

# -----------------------------------------------------------------------------
# maj@k: canonicalisation and deterministic ties


def test_canonical_answer():
    assert ev.canonical_answer(" 1,000 ") == ev.canonical_answer("1000.0") == ev.canonical_answer("$1000$") == "1000"
    assert ev.canonical_answer("0.50") == "0.5" and ev.canonical_answer("007") == "7"
    assert ev.canonical_answer("\\dfrac{1}{2}") == ev.canonical_answer("\\frac{1}{2}")
    assert ev.canonical_answer("\\text{B}") == "B" and ev.canonical_answer("\\left(1, 2\\right)") == "(1,2)"
    assert ev.canonical_answer(None) is None and ev.canonical_answer("  ") is None


def test_majority_vote_counts_canonical_forms_and_breaks_ties_by_first_sample():
    # 7 appears as "7", "7.0", "07" (3 votes) against 3 (2 votes): 7 wins although 3 came first
    rs = [rec("p", 0, False, "3"), rec("p", 1, True, "7"), rec("p", 2, False, "3"), rec("p", 3, True, "7.0"),
          rec("p", 4, True, "07"), rec("p", 5, False, None)]
    assert ev.majority_vote(rs) == ("7", True)
    # 2 votes each: the answer of the lowest sample index wins, whatever the order of the records
    tie = [rec("p", 3, True, "12"), rec("p", 0, False, "5"), rec("p", 2, False, "5"), rec("p", 1, True, "12")]
    assert ev.majority_vote(tie) == ("5", False)
    assert ev.majority_vote(list(reversed(tie))) == ("5", False)
    assert ev.majority_vote([rec("p", 0, False, None), rec("p", 1, False, None)]) == (None, False)
    # a lone answer beats any number of non-answers
    assert ev.majority_vote([rec("p", 0, False, None), rec("p", 1, False, None), rec("p", 2, True, "4")]) == ("4", True)


def test_compute_metrics_hand_computed():
    samples = [  # problem a: 1/4 correct, majority wrong; b: 3/4 correct, majority right; c: 0/4
        rec("a", 0, True, "1", num_tool_calls=2, tool_errors=1), rec("a", 1, False, "2"), rec("a", 2, False, "2"),
        rec("a", 3, False, None, overlong=True, response_len=50),
        rec("b", 0, True, "9", num_turns=3), rec("b", 1, True, "9"), rec("b", 2, False, "8", tool_timeouts=1,
                                                                          num_tool_calls=1), rec("b", 3, True, "9"),
        rec("c", 0, False, "x"), rec("c", 1, False, "y"), rec("c", 2, False, None), rec("c", 3, False, None),
    ]
    m = ev.compute_metrics(samples, n_boot=200, seed=0)
    assert (m["problems"], m["k"]) == (3, 4)
    assert m["avg@4"] == pytest.approx((0.25 + 0.75 + 0) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["maj@4"] == pytest.approx(1 / 3)
    assert m["tool_calls"] == pytest.approx(3 / 12)
    assert m["tool_error_rate"] == pytest.approx(1 / 3) and m["tool_timeout_rate"] == pytest.approx(1 / 3)
    assert m["turns"] == pytest.approx(14 / 12) and m["response_tokens"] == pytest.approx((11 * 10 + 50) / 12)
    assert m["truncated"] == pytest.approx(1 / 12) and m["no_answer"] == pytest.approx(3 / 12)
    for name in ("avg", "pass", "maj"):
        assert 0 <= m[f"{name}@4_lo"] <= m[f"{name}@4"] <= m[f"{name}@4_hi"] <= 1
    curve = ev.pass_curve(samples)
    assert curve[0] == pytest.approx(m["avg@4"]) and curve[-1] == pytest.approx(m["pass@4"])
    assert curve[1] == pytest.approx((1 - 3 / 6 + 1 + 0) / 3)  # a: 1 - C(3,2)/C(4,2); b: any pair has a hit

# -----------------------------------------------------------------------------
# Bootstrap coverage and paired comparison


def test_bootstrap_ci_covers_known_rate():
    rng, truth, covered = np.random.default_rng(123), 0.3, 0
    for rep in range(50):  # 40 problems, 4 Bernoulli(0.3) samples each: the per-problem rates have mean 0.3
        rates = rng.binomial(4, truth, size=40) / 4
        lo, hi = ev.bootstrap_ci(rates, n_boot=500, seed=rep)
        covered += lo <= truth <= hi
    assert covered >= 42, covered  # nominal 95%: 47.5 of 50 expected; < 42 would be a 3-sigma miss
    assert ev.bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert ev.bootstrap_ci(rates, seed=1) == ev.bootstrap_ci(rates, seed=1)


def write_run(path, rates, k=4, knobs=None, order=None):
    samples = []
    for pid in order or list(rates):
        c = round(rates[pid] * k)
        samples += [rec(pid, j, j < c) for j in range(k)]
    with open(path, "w") as f:
        json.dump({"knobs": knobs or {}, "samples": samples}, f)
    return str(path)


def test_compare_runs_paired(tmp_path):
    rng = np.random.default_rng(0)
    base = {f"p{i}": rng.integers(0, 3) / 4 for i in range(30)}
    better = {pid: r + 0.25 for pid, r in base.items()}  # every problem gains exactly one of four samples
    a = write_run(tmp_path / "a.json", base, knobs={"model": "A", "k": 4})
    b = write_run(tmp_path / "b.json", better, knobs={"model": "B", "k": 4}, order=sorted(base, reverse=True))
    out = ev.compare_runs(a, b, n_boot=300)
    assert out["problems"] == 30 and out["diff"] == pytest.approx(0.25)
    assert out["diff_lo"] == pytest.approx(0.25) and out["diff_hi"] == pytest.approx(0.25)  # no spread in a constant
    assert out["knobs_that_differ"] == {"model": ("A", "B")}
    # a noisy pair on partly shared problems: difference over the shared ones only, CI brackets it
    noisy = {pid: float(rng.integers(0, 5) / 4) for pid in list(base)[:20]} | {"extra": 1.0}
    c = write_run(tmp_path / "c.json", noisy)
    out = ev.compare_runs(a, c, n_boot=300)
    expect = np.mean([noisy[p] - base[p] for p in list(base)[:20]])
    assert (out["problems"], out["only_a"], out["only_b"]) == (20, 10, 1)
    assert out["diff"] == pytest.approx(expect) and out["diff_lo"] <= expect <= out["diff_hi"]
    with pytest.raises(SystemExit, match="no problem in common"):
        ev.compare_runs(a, write_run(tmp_path / "d.json", {"zz": 0.5}))
    with pytest.raises(SystemExit, match="no such result file"):
        ev.compare_runs(a, os.path.join(tmp_path, "missing.json"))


class CountingEngine:
    """Wraps an engine and counts the turns it is asked to sample."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, 0

    def submit(self, *args):
        self.prompts += 1
        self.engine.submit(*args)

    def poll(self):
        return self.engine.poll()


def test_toy_eval_end_to_end_and_resume(tmp_path):
    import data
    import models
    import rollout
    tok = models.make_toy_tokenizer()
    problems = data.load_eval_data("toy")[:3]
    eng = CountingEngine(rollout.HFEngine(models.tiny_qwen3(tok, "tiny"), tok))
    stem = str(tmp_path / "toy")
    kw = dict(temperature=1.0, top_p=1.0, max_response_len=24, max_turns=2, progress=False)
    m1 = ev.evaluate(eng, tok, problems, 2, out_path=stem, **kw)
    assert m1["problems"] == 3 and m1["k"] == 2 and 0.0 <= m1["avg@2"] <= 1.0
    first = eng.prompts
    assert first >= 6
    for ext in (".json", ".md", ".png", ".samples.jsonl"):
        assert os.path.getsize(stem + ext) > 0
    rep = json.load(open(stem + ".json"))
    assert rep["knobs"]["top_p"] == 1.0 and len(rep["samples"]) == 6
    assert rep["knobs"]["protocol"] == "paper" and rep["knobs"]["grader"] == "strict"  # evaluate's defaults
    assert "Protocol `paper` (tool I/O), grader `strict`" in open(stem + ".md").read()
    # a restart with one more sample per problem only samples the missing ones
    ev.evaluate(eng, tok, problems, 3, out_path=stem, **kw)
    assert 3 <= eng.prompts - first < 6
    eng.prompts = 0
    m3 = ev.evaluate(eng, tok, problems, 3, out_path=stem, **kw)  # everything cached: no sampling at all
    assert eng.prompts == 0 and m3["k"] == 3


def test_refuses_torchrun(monkeypatch):  # every rank would evaluate the same problems and write one report
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="uses one GPU"):
        ev.main(["--bench", "toy", "--model", "toy:tiny"])
