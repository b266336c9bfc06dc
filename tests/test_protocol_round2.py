"""The paper protocol on the cases issue 25 found where it differed from the original's own code (classes A-J and
the other fields a model controls). Each test names the original's file and line (YoungZ365/SOD @ 110c4b8; the
sandbox: bytedance/SandboxFusion @ 469de08) and asserts what that code computes under "paper", and the sensible
answer under "clean" where they differ. Expected values are derived by hand from that code."""
import json
import subprocess
import sys

import pytest

import reward
import tools
from sandbox import ExecResult

PAPER, CLEAN = tools.tool_protocol("paper"), tools.tool_protocol("clean")


class Recorder:
    """An executor that records (code, timeout) and answers `ran N`."""
    def __init__(self):
        self.calls = []

    def __call__(self, code, timeout, echo=True):
        self.calls.append((code, timeout))
        return ExecResult("ok", f"ran {len(self.calls)}\n", "", 0.0)


def run_plain(code, timeout, echo=True):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)


def turn(*bodies):
    return "".join(f"<tool_call>\n{b}\n</tool_call>" for b in bodies)


def call(**arguments):
    return json.dumps({"name": "code_interpreter", "arguments": arguments})


def paper(text, execute=None):
    return tools.tool_turn(text, execute or Recorder(), PAPER)

# -----------------------------------------------------------------------------
# A. skip_special_tokens=True removes Qwen3's 14 special tokens, no others (verl/workers/reward_manager/dapo.py
# l.86; which tokens are special: Qwen3's tokenizer_config.json added_tokens_decoder)


def math_score(text, gt, protocol="paper"):
    return reward.compute_score("math_dapo", text, gt, 1, 10, 4096, **reward.grading(protocol))["score"]


@pytest.mark.parametrize("text, gt, want_paper, want_clean", [
    ("\\boxed{B<|box_end|>}", "B", 1.0, -1.0),  # special: removed before grading
    ("\\boxed{B<|fim_pad|>}", "B", -1.1, -1.0),  # not special in Qwen3: kept (the 1.0 is wrong)
    ("\\boxed{<think>7}", "7", -1.1, -1.0),  # <think> is not special
    ("\\boxed{7}" + "<|vision_pad|>" * 60, "7", 1.0, 1.0),  # 840 characters gone: the box is in the last 100
    ("\\boxed{7}" + "." * 85 + "<|im_end|>", "7", 1.0, 1.0),
    ("\\boxed{7}" + "<tool_call>" * 9, "7", -1.1, 1.0),  # 99 characters kept: the box starts 108 from the end
])
def test_a_special_tokens_removed_as_the_original_decodes(text, gt, want_paper, want_clean):
    assert math_score(text, gt) == pytest.approx(want_paper)
    assert math_score(text, gt, "clean") == pytest.approx(want_clean)


def test_a_the_special_set_is_qwen3s():
    import models
    assert reward.QWEN3_SPECIAL == tuple(models.QWEN3_ADDED[:14])
    assert reward.decoded_like_original("<|im_start|>a<|object_ref_start|>b<|fim_pad|><|file_sep|></think>") == \
        "ab<|fim_pad|><|file_sep|></think>"

# -----------------------------------------------------------------------------
# B. the strict check compares with the raw ground truth (verl/utils/reward_score/math_dapo.py l.217; compute_score
# l.242-262 and recipe/demystify/reward.py l.173 pass it on unchanged)


@pytest.mark.parametrize("text, gt, want_paper, want_clean", [
    ("\\boxed{42}", 42, -1.1, 1.0),
    ("\\boxed{42}", "42", 1.0, 1.0),
    ("\\boxed{0.5}", 0.5, -1.1, 1.0),
    ("\\boxed{42}", ["42"], -1.1, -1.0),
    ("no box here", None, 1.0, -1.0),  # None == None: the original scores a missing box correct
    ("\\boxed{None}", None, -1.1, 1.0),
    ("\\boxed{C}", "C", 1.0, 1.0),
])
def test_b_ground_truth_as_the_row_holds_it(text, gt, want_paper, want_clean):
    assert math_score(text, gt) == pytest.approx(want_paper)
    assert math_score(text, gt, "clean") == pytest.approx(want_clean)
    gpqa = reward.compute_score("gpqa_diamond", text, gt, 1, 10, 4096, **reward.grading("paper"))["score"]
    assert gpqa == pytest.approx(want_paper)  # GPQA takes the same strict check (reward.py l.170-173)
