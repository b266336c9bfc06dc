"""The toy (toy.py, toy.sh, docs/toy.md): its problems and their train/eval split, the failure-mode statistics of
train_sod on hand-made episodes, and the numbers toy.sh's summary and table print against the eval JSONs."""
import pytest
import torch

import rollout
import sod_loss
import train_sod

# -----------------------------------------------------------------------------
# the task: seeded problems, and an evaluation that never overlaps training


def test_problems_are_seeded_distinct_and_graded_by_their_arguments():
    import toy
    a = toy.toy_problems(300, seed=1)
    assert a == toy.toy_problems(300, seed=1) and a != toy.toy_problems(300, seed=2)
    assert len({p["question"] for p in a}) == 300
    for p in a:
        x, y, z = p["args"]
        assert p["ground_truth"] == str(x * y if p["kind"] == "mul" else x * y + z)


def test_sft_data_knobs_fail_and_slip():
    import toy
    calls = lambda c: [m["tool_calls"][0]["function"]["arguments"]["code"] for m in c["messages"]
                       if m.get("tool_calls")]
    clean = toy.toy_sft_conversations(40, seed=3, fail=0.0)
    assert not any("Error" in m["content"] for c in clean for m in c["messages"] if m["role"] == "tool")
    assert clean == toy.toy_sft_conversations(40, seed=3, fail=0.0, slip=0.0)
    assert any("NameError" in m["content"] for c in toy.toy_sft_conversations(40, seed=3, fail=1.0)
               for m in c["messages"] if m["role"] == "tool")
    for c, p in zip(toy.toy_sft_conversations(40, seed=3, fail=0.0, slip=1.0), toy.toy_problems(40, seed=3)):
        a, b, _ = p["args"]
        code = calls(c)[0]
        b2 = code.split("* ")[1].rstrip(")")
        assert code.startswith(f"print({a} * ") and len(b2) == len(str(b))
        assert sum(x != y for x, y in zip(b2, str(b))) == 1  # one digit miscopied
        last_tool = [m["content"] for m in c["messages"] if m["role"] == "tool"][-1]
        assert c["messages"][-1]["content"] == f"The answer is \\boxed{{{last_tool}}}." != p["ground_truth"]


def test_evaluation_problems_never_appear_in_training():
    import toy
    bench = toy.eval_problems()
    assert len(bench) == toy.EVAL_N == len({p["question"] for p in bench})
    texts = lambda ps: {m["content"] for p in ps for m in p["prompt_messages"]}
    held_out = texts(bench)
    for seed in (0, 1, 2):  # train_sod's prompts: 2,048 problems of its --seed
        assert not held_out & texts(toy.toy_problems(2048, seed))
    sft = {c["messages"][0]["content"] for c in toy.toy_sft_conversations(300, seed=0)}
    assert len(sft) == 300 and not held_out & sft
    assert {toy.split_of(p["question"]) for p in bench} == {"eval"}


def test_toy_tokenizer_keeps_the_tool_declaration_whole_and_decodes_exactly():
    # the system turn that declares the tool is ~200 BPE tokens of fixed text in every toy sequence; the toy tokenizer
    # keeps its fixed parts whole (a few tokens), and every text still decodes to itself
    import models
    import tools
    import toy
    tok = models.make_toy_tokenizer()
    conv = toy.toy_sft_conversations(8, seed=0, fail=1.0)[3]
    text = tok.apply_chat_template(conv["messages"], tools=conv["tools"], tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    system = text[:text.index("<|im_start|>user")]
    assert len(tok(system, add_special_tokens=False)["input_ids"]) <= 8  # <|im_start|> system \n, 3 chunks, end
    call = '{"name": "' + tools.TOOL_NAME + '", "arguments": {"code": "'
    assert text.count(call) == sum(len(m.get("tool_calls") or []) for m in conv["messages"]) == 2
    assert ids.count(tok.convert_tokens_to_ids(call)) == 2  # each call opens with one token
    # a text that only resembles the declaration falls back to BPE and still round-trips
    other = system.replace("Run a Python", "Run a Ruby")
    assert tok.decode(tok(other, add_special_tokens=False)["input_ids"]) == other


# -----------------------------------------------------------------------------
# failure-mode statistics


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

# -----------------------------------------------------------------------------
# the numbers toy.sh prints, against the eval JSONs (and eval.py's own compare)


def write_eval(path, outcomes, errors=None):
    """An eval JSON as eval.py writes it, from per-problem lists of sample outcomes; errors: tool_errors likewise."""
    import json

    import eval as ev
    samples = [dict(problem_id=f"p{i}", sample=j, acc=a, pred="1", num_turns=2, num_tool_calls=1,
                    tool_errors=(errors[i][j] if errors else 0), tool_timeouts=0, response_len=10, overlong=False)
               for i, accs in enumerate(outcomes) for j, a in enumerate(accs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"knobs": {"model": path.parent.name}, "metrics": ev.compute_metrics(samples),
                                "samples": samples}))
    return str(path)


def test_summary_numbers_are_the_eval_jsons_and_evals_compare(tmp_path):
    import random

    import eval as ev
    import toy
    rng = random.Random(0)
    draw = lambda p: [[rng.random() < p for _ in range(2)] for _ in range(40)]
    paths = {n: write_eval(tmp_path / f"eval_{n}" / "toy.json", draw(p))
             for n, p in (("teacher_sft", 0.9), ("student_sft", 0.3), ("sod", 0.7))}
    text, got = toy.summary(str(tmp_path), "sod")
    m = {n: __import__("json").load(open(p))["metrics"] for n, p in paths.items()}
    for key, name in (("teacher", "teacher_sft"), ("student", "student_sft"), ("after", "sod")):
        assert got["acc"][key] == (m[name]["avg@2"], m[name]["avg@2_lo"], m[name]["avg@2_hi"])
        assert f"{100 * m[name]['avg@2']:.1f} [{100 * m[name]['avg@2_lo']:.1f}, " in text
    cmp = ev.compare_runs(paths["student_sft"], paths["sod"])
    assert got["gain"] == pytest.approx((cmp["diff"], cmp["diff_lo"], cmp["diff_hi"]), abs=1e-12)
    assert got["closed"] == pytest.approx(cmp["diff"] / (m["teacher_sft"]["avg@2"] - m["student_sft"]["avg@2"]))
    assert ("beyond noise" in text) and (("NOT" in text) == (cmp["diff_lo"] <= 0))


def test_table_cells_against_hand_counts(tmp_path):
    import toy
    P = 20  # problems; two samples each
    const = lambda r: [[True, r > 0.5] if r < 1 else [True, True] for _ in range(P)]  # rate 0.5 or 1 per problem
    write_eval(tmp_path / "eval_student_sft" / "toy.json", [[False, False]] * P)  # 0 %
    for setting, (teacher, _) in toy.SETTINGS.items():
        write_eval(tmp_path / f"eval_{teacher}" / "toy.json", const(1.0))
        for algo in toy.ALGOS:
            for seed in (0, 1, 2):
                run = toy.run_name(setting, algo, seed)
                good = algo == "sod" or (algo == "opd" and seed == 0)  # sod: 100 % every seed; opd: 100, 50, 50 %
                errs = [[1, 0] for _ in range(P)]  # every problem's first sample had a failed call (and ended right)
                write_eval(tmp_path / f"eval_{run}" / "toy.json", const(1.0 if good else 0.5), errs)
                (tmp_path / run).mkdir(exist_ok=True)
                (tmp_path / run / "metrics.jsonl").write_text(
                    '{"step": 1, "fail/n_after": 2, "fail/d_after": 1.0, "fail/w_after": 1.0, "fail/n_clean": 4, '
                    '"fail/d_clean": 0.4, "fail/w_clean": 4.0}\n{"step": 2, "fail/n_after": 2, "fail/d_after": 3.0, '
                    '"fail/w_after": 0.2, "fail/n_clean": 0, "fail/d_clean": 0.0, "fail/w_clean": 0.0}\n')
    text = toy.table(str(tmp_path))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| + ")}
    assert rows["+ sod"][0].startswith("100.0 [100.0, 100.0]") and rows["+ sod"][1] == "100.0 100.0 100.0"
    assert rows["+ opd"][0].startswith("66.7 [") and rows["+ opd"][1] == "100.0 50.0 50.0"
    assert rows["+ opd"][2].startswith("+33.3 [")  # SOD - OPD: 100 - 66.7 points
    assert rows["+ gated"][3] == "50.0" and rows["+ gated"][4] == "100.0"  # failed % of samples, recovered %
    # d, w after a failed call: (1 + 3) / 4 steps and (1 + 0.2) / 4; clean: 0.4 / 4 and 4 / 4, summed over 3 seeds
    assert rows["+ sod"][5] == "1.000 / 0.100" and rows["+ sod"][6] == "0.300 / 1.000"
    assert rows["+ grpo (no teacher)"][5] == "-"
    assert text.count("| teacher | 100.0 [100.0, 100.0]") == 2 and "| student (SFT) | 0.0 [0.0, 0.0]" in text
