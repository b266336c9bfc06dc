"""eval.py's statistics have their nominal level. Simulations with a known truth: many synthetic benchmarks, each a
fresh draw of problems from a population, and the share of the intervals that cover the population's mean. A 95 %
interval must cover it about 95 % of the time. In these designs (measured over 6,000 replications) a 95 % percentile
bootstrap covers 0.94-0.945 (it undercovers a little at 40-50 problems), a 90 % one 0.89 and a 99 % one 0.98: the
window [0.925, 0.965] over 2,000 replications (one standard error 0.005) takes the first and rejects a 90 % interval
by 5 standard errors; the paired one, whose every replication costs more, uses 1,000 and [0.92, 0.965] (about 3 on
either side). The replications are seeded, so each test is deterministic. pass@k is checked against brute-force
enumeration of the subsets of each problem's actual samples."""
import io
import itertools
import json

import numpy as np
import pytest

import eval as ev

N_BOOT = 400


def test_bootstrap_ci_covers_the_population_mean_at_95_percent():
    # 50 problems of difficulty p ~ Beta(2, 3) (population mean 0.4), 8 samples each: the per-problem success
    # rates whose mean avg@k reports, and the default-level interval compute_metrics reports for it
    rng, n, k, truth = np.random.default_rng(2024), 50, 8, 0.4
    rates = rng.binomial(k, rng.beta(2, 3, size=(2000, n))) / k
    cover = [lo <= truth <= hi for lo, hi in (ev.bootstrap_ci(r, n_boot=N_BOOT, seed=i) for i, r in enumerate(rates))]
    assert 0.925 <= np.mean(cover) <= 0.965, np.mean(cover)


def test_compute_metrics_reports_that_interval():
    rng, samples = np.random.default_rng(5), []
    correct = rng.binomial(4, 0.4, size=30)
    for i, c in enumerate(correct):
        samples += [dict(problem_id=f"p{i}", sample=j, acc=bool(j < c), pred=None, num_tool_calls=0, tool_errors=0,
                         tool_timeouts=0, num_turns=1, response_len=1, overlong=False) for j in range(4)]
    m = ev.compute_metrics(samples, n_boot=N_BOOT, seed=3)
    assert (m["avg@4_lo"], m["avg@4_hi"]) == ev.bootstrap_ci(correct / 4, n_boot=N_BOOT, seed=3)


def test_paired_interval_of_compare_runs_covers_the_true_difference_at_95_percent(tmp_path, monkeypatch):
    # two runs on the same 40 problems of difficulty p ~ U(0.1, 0.8), 4 samples each; run B solves each problem
    # with probability p + 0.1, so the true mean difference is 0.1. compare_runs reads two result files: their
    # text is served from memory (the same JSON it would read from disk)
    rng, n, k, truth, reps = np.random.default_rng(7), 40, 4, 0.1, 1000
    p = rng.uniform(0.1, 0.8, size=(reps, n))
    a, b = rng.binomial(k, p), rng.binomial(k, p + truth)
    paths = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    for path in paths:
        open(path, "w").close()
    texts = {}

    def result(correct):
        return json.dumps({"knobs": {}, "samples": [{"problem_id": i, "sample": j, "acc": j < c}
                                                    for i, c in enumerate(correct.tolist()) for j in range(k)]})
    monkeypatch.setattr(ev, "open", lambda path, *a, **kw: io.StringIO(texts[path]), raising=False)
    cover = 0
    for i in range(reps):
        texts[paths[0]], texts[paths[1]] = result(a[i]), result(b[i])
        out = ev.compare_runs(*paths, n_boot=N_BOOT, seed=i)
        assert out["diff"] == pytest.approx((b[i] - a[i]).mean() / k)
        cover += out["diff_lo"] <= truth <= out["diff_hi"]
    assert 0.92 <= cover / reps <= 0.965, cover / reps


def test_pass_curve_matches_subset_enumeration():
    # per problem, pass@j is the chance that j samples drawn without replacement from its k include a correct one:
    # enumerate every j-subset of the actual samples
    rng, k = np.random.default_rng(11), 6
    outcomes = [rng.random(k) < q for q in (0.0, 0.15, 0.5, 0.5, 0.9, 1.0)]
    samples = [dict(problem_id=f"p{i}", sample=j, acc=bool(o[j]), pred=None, num_tool_calls=0, tool_errors=0,
                    tool_timeouts=0, num_turns=1, response_len=1, overlong=False)
               for i, o in enumerate(outcomes) for j in rng.permutation(k).tolist()]  # records in any order
    brute = [np.mean([np.mean([o[list(s)].any() for s in itertools.combinations(range(k), j)]) for o in outcomes])
             for j in range(1, k + 1)]
    assert ev.pass_curve(samples) == pytest.approx(brute, abs=1e-12)
    m = ev.compute_metrics(samples, n_boot=10)
    assert m[f"pass@{k}"] == pytest.approx(brute[-1]) and m[f"avg@{k}"] == pytest.approx(brute[0])
