"""tools.py's rules at their edges, each against the value the original (SandboxFusion, its client in
verl/utils/reward_score/sandbox_fusion/utils.py, recipe/demystify/reward.py) or docs/fidelity.md states; these are the
cases that mutation testing (bench/mutate.py, docs/testing.md) found no test for: the stream-size and output-length
boundaries, the file name tracebacks and warnings show, undecodable streams, which `timeout` arguments a call can
use, calls that are answered without running, and the protocol knobs' zero values."""
import math
import re

import pytest

import tools
import train_sod
from sandbox import ExecResult

PAPER = tools.tool_protocol("paper")
SCRIPT = re.compile(r"/tmp/tmp[a-z0-9_]{8}/tmp[a-z0-9_]{8}\.py")


@pytest.mark.parametrize("n, kept", [(131072, True), (131073, False)])
def test_a_stream_past_128_kib_reads_no_stdout(n, kept):
    # SandboxFusion reads a stream until 2 x 64 KiB; one byte more and the run never ends: "no stdout here"
    res = ExecResult("ok", "x" * n, "", 0.1)
    assert tools.paper_streams(res) == ("x" * n if kept else None)


def test_tracebacks_and_warnings_name_the_file_sandboxfusion_runs():
    code = "import warnings\nwarnings.warn('careful')\n1 / 0"
    err = ('<code>:2: UserWarning: careful\n  warnings.warn("careful")\nTraceback (most recent call last):\n'
           '  File "<code>", line 3, in <module>\nZeroDivisionError: division by zero\n')
    out = tools.paper_streams(ExecResult("error", "", err, 0.1), code)
    script = tools.paper_script(code)
    assert SCRIPT.fullmatch(script) and script == tools.paper_script(code)  # drawn from the code: runs repeat
    assert out == (f'{script}:2: UserWarning: careful\n  warnings.warn("careful")\nTraceback (most recent call '
                   f'last):\n  File "{script}", line 3, in <module>\nZeroDivisionError: division by zero\n')
    assert tools.paper_streams(ExecResult("error", "", err, 0.1)) == err  # no code: the text as it came


def test_an_undecodable_stream_reads_as_sandboxfusions_decode_error():
    res = ExecResult("ok", "", "", 0.1, raw=(b"ok \xff", b""))
    out = tools.paper_streams(res)
    assert out.startswith("[DecodeError] ") and "can't decode byte 0xff in position 3" in out


@pytest.mark.parametrize("n", [256, 257])
def test_paper_output_cut_only_past_max_chars(n):
    text = "a" * (n - 1) + "z"
    got = tools.paper_observation(ExecResult("ok", text, "", 0.1), 256, "print()")
    assert got == (text if n <= 256 else "a" * 128 + "...(truncated)..." + text[-128:])


@pytest.mark.parametrize("n", [2048, 2049])
def test_clean_output_cut_only_past_max_chars(n):
    got = tools.observation({"name": "code_interpreter", "arguments": {"code": ""}}, ExecResult("ok", "a" * n, "", 0),
                            2048)
    assert got == ("a" * n if n <= 2048 else "a" * 2048 + "\n... [truncated 1 characters]")


def test_clean_protocol_limits_and_the_plain_tool_protocol():
    # docs/fidelity.md, clean column: 2,048 characters, 10 s, 2,048 MB, every call of a turn
    clean = tools.tool_protocol("clean")
    assert (clean.max_chars, clean.timeout, clean.memory_mb, clean.max_calls) == (2048, 10.0, 2048, 0)
    assert tools.ToolProtocol() == clean


BOUND = 2 ** 63 / 1e9  # requests refuses a total timeout t + t + 10 past a C timestamp in nanoseconds


@pytest.mark.parametrize("t, want", [
    (5, 5.0), (0.5, 0.5), (True, 1.0), (600, 60.0),  # capped at the protocol's 60 s
    (0, None), (-1, None), (math.nan, None), (math.inf, None), ("5", None), (None, None), ([5], None),
    ((BOUND - 10) / 2 - 0.25, 60.0), ((BOUND - 10) / 2 + 2.5, None), (4e9, 60.0), (1e10, None), (10 ** 400, None),
])
def test_which_timeout_arguments_a_call_can_use(t, want):
    assert tools.paper_timeout(t, 60.0) == want


def test_calls_answered_without_running():
    # a language other than python, or code that is not UTF-8 (a lone surrogate), never reaches the sandbox: the
    # client reads "no stdout here"
    ran = []
    execute = lambda code, timeout, echo=False: ran.append(code) or ExecResult("ok", "1\n", "", 0.1)
    for args in ('{"code": "echo 1", "language": "bash"}', '{"code": "print(\\"\\ud800\\")"}'):
        turn = tools.tool_turn(f'<tool_call>{{"name": "code_interpreter", "arguments": {args}}}</tool_call>',
                               execute, PAPER)
        assert (turn["status"], turn["observations"], turn["end"]) == (["error"], ["no stdout here"], False), args
    assert ran == []
    turn = tools.tool_turn('<tool_call>{"name": "code_interpreter", "arguments": {"code": "1"}}</tool_call>', execute,
                           PAPER)
    assert turn["observations"] == ["1\n"] and ran == ["print(1)"]  # the control: a plain call runs


def test_protocol_knobs_at_zero():
    cfg = lambda **kw: train_sod.Config(protocol="paper", **kw)
    assert tools.protocol_of(cfg(tool_max_calls=0)).max_calls == 0  # 0: every call, not the protocol's 1
    assert tools.protocol_of(cfg()).max_calls == 1  # -1: the protocol's
    assert tools.protocol_of(cfg()).memory_mb == 2048 and tools.protocol_of(cfg(tool_memory_mb=512)).memory_mb == 512
    assert tools.protocol_of(cfg(max_obs_chars=0, tool_timeout=0.0)) == PAPER  # 0: the protocol's
