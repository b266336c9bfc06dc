"""eval.py end to end through main: the reported avg@k / pass@k / maj@k equal what the per-sample records in the
JSON imply and what the script of answers implies by hand, the Markdown shows the same numbers, and the sample
cache is reused only while the problem text and the sampling knobs stay the same.

The policy is scripted by replacing rollout.rollout (the agreed entry point): the answer of a prompt is read off a
fixed list per problem, in the order the samples are asked for.
"""
import json
import re
from collections import Counter

import pytest

import eval as ev
import rollout

K = 4
# problem id -> (question, ground truth, the K answers in sample order; None: no \boxed answer)
SCRIPT = {
    "p1": ("Alpha: what is 6 * 7?", "42", ["42", "7", "7", None]),  # 1 right, majority 7 (wrong)
    "p2": ("Beta: what is 2 + 3?", "5", ["5", "5", "1", "5"]),  # 3 right, majority 5 (right)
    "p3": ("Gamma: what is 3 * 3?", "9", [None, None, None, None]),  # nothing answered
    "p4": ("Delta: what is 2 * 4?", "8", ["3", "8", "3", "8"]),  # 2 right, tie 3 / 8: sample 0's answer wins
}
# by hand from SCRIPT: avg = mean of 1/4, 3/4, 0, 2/4; pass@4 = share of problems with a right sample; maj as marked;
# pass@2 = mean of 1 - C(4-c, 2) / C(4, 2) = 1 - 3/6, 1, 0, 1 - 1/6
ROW_ID = {f"probs.jsonl-{i}": pid for i, pid in enumerate(SCRIPT)}  # rows without an index: file name-row number
HAND = {"avg": 1.5 / 4, "pass": 3 / 4, "maj": 1 / 4, "pass@2": (0.5 + 1 + 0 + 5 / 6) / 4}


def write_problems(path, edit=None):
    with open(path, "w") as f:
        for pid, (q, gt, _) in SCRIPT.items():
            q = edit.get(pid, q) if edit else q
            f.write(json.dumps({"problem": q, "answer": gt}) + "\n")  # the AIME 2025 layout of Open-AgentRL-Eval


def scripted_rollout(asked):
    """Stand-in for rollout.rollout: the n-th time a problem is asked for, it answers SCRIPT's answer n mod K."""
    def fake(engine, tok, prompt_ids_list, **kw):
        eps = []
        for p in prompt_ids_list:
            text = tok.decode(p)
            pid = next(pid for pid, (q, _, _) in SCRIPT.items() if q.split(":")[0] in text)
            ans = SCRIPT[pid][2][sum(a == pid for a in asked) % K]
            asked.append(pid)
            resp = tok.encode("<think>\nDone.\n</think>\n\n" + (f"So \\boxed{{{ans}}}." if ans else "I give up.")
                              + "<|im_end|>", add_special_tokens=False)
            eps.append(rollout.Episode(prompt_ids=list(p), ids=list(p) + resp, mask=[0] * len(p) + [1] * len(resp),
                                       sampler_logp=[0.0] * (len(p) + len(resp)), num_turns=1, finish="answer",
                                       response_text=tok.decode(resp)))
        return eps
    return fake


def run_eval(tmp_path, *extra):
    return ev.main(["--bench", "aime25", "--data", str(tmp_path / "probs.jsonl"), "--model", "toy:tiny",
                    "--backend", "hf", "--k", str(K), "--out_dir", str(tmp_path / "out"), "--n_boot", "200",
                    "--max_response_len", "64", *extra])


def by_hand(samples):
    """avg@k, pass@k, maj@k from per-sample records (plain answers: no canonical forms needed)."""
    groups = {}
    for r in samples:
        groups.setdefault(r["problem_id"], []).append(r)
    avg, pas, maj = [], [], []
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r["sample"])
        c = sum(r["acc"] for r in rs)
        avg.append(c / len(rs))
        pas.append(float(c > 0))
        votes = Counter(r["pred"] for r in rs if r["pred"] is not None)
        top = max(votes.values(), default=0)
        first = next((r for r in rs if r["pred"] is not None and votes[r["pred"]] == top), None)
        maj.append(float(first is not None and first["acc"]))
    return {k: sum(v) / len(v) for k, v in (("avg", avg), ("pass", pas), ("maj", maj))}


def test_reports_match_records_and_hand_values(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(rollout, "rollout", scripted_rollout(asked))
    write_problems(tmp_path / "probs.jsonl")
    metrics = run_eval(tmp_path)
    assert len(asked) == len(SCRIPT) * K
    rep = json.load(open(tmp_path / "out" / "aime25.json"))
    samples = rep["samples"]
    assert len(samples) == len(SCRIPT) * K
    for r in samples:  # each record is the scripted answer, graded against its ground truth
        _, gt, answers = SCRIPT[ROW_ID[r["problem_id"]]]
        assert r["pred"] == answers[r["sample"]] and r["acc"] == (answers[r["sample"]] == gt)
    records = by_hand(samples)
    md = open(tmp_path / "out" / "aime25.md").read()
    for m in ("avg", "pass", "maj"):
        assert metrics[f"{m}@{K}"] == pytest.approx(HAND[m]) == pytest.approx(records[m])
        assert rep["metrics"][f"{m}@{K}"] == pytest.approx(HAND[m])
        shown = re.search(rf"\|\s*{m}@{K}\s*\|\s*([\d.]+)\s*\|", md)
        assert shown and float(shown.group(1)) == pytest.approx(100 * HAND[m], abs=0.005), m
    assert rep["pass_curve"][1] == pytest.approx(HAND["pass@2"]) and rep["pass_curve"][0] == pytest.approx(HAND["avg"])


def test_cache_reused_only_for_the_same_text_and_knobs(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(rollout, "rollout", scripted_rollout(asked))
    write_problems(tmp_path / "probs.jsonl")
    first = run_eval(tmp_path)
    assert len(asked) == len(SCRIPT) * K
    asked.clear()
    assert run_eval(tmp_path) == first and asked == []  # same problems, same knobs: all from the cache
    run_eval(tmp_path, "--top_p", "0.9")
    assert len(asked) == len(SCRIPT) * K  # a sampling knob changed: everything is sampled again
    asked.clear()
    run_eval(tmp_path, "--temperature", "0.7")
    assert len(asked) == len(SCRIPT) * K
    asked.clear()
    write_problems(tmp_path / "probs.jsonl", edit={"p2": "Beta: what is 2 + 3, in words?"})
    run_eval(tmp_path)  # back to the first knobs: only the problem whose text changed is sampled again
    assert asked == ["p2"] * K
