"""The built-in toy task: arithmetic too large for a tiny model's head, solved with one or two tool calls.

Problems with ground truth, and solved multi-turn trajectories for the toy SFT (a quarter of them recover from a
failed call). Everything the real run does runs on it: the chat template, tool calls in the sandbox, masks, FSDP2,
checkpoints, eval (docs/toy.md).
"""

import tools

TOY_PROMPT = "Use the tool, then put the answer in \\boxed{}."
EVAL_SEED = 999_999  # the toy benchmark's problems: a seed no training run uses by default


def _call(code, reasoning):
    return {"role": "assistant", "content": "", "reasoning_content": reasoning,
            "tool_calls": [{"type": "function", "function": {"name": tools.TOOL_NAME, "arguments": {"code": code}}}]}


def toy_problems(n, seed):
    """n seeded problems: "a * b" (one call) or "a * b + c" computed in two calls; ground truth as a string."""
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # fixed widths: every number sits at a fixed offset in the prompt, which tiny models learn to copy from
        a, b, c = rng.randint(1000, 9999), rng.randint(100, 999), rng.randint(1000, 9999)
        if rng.random() < 0.5:
            q, gt, kind = f"What is {a} * {b}?", a * b, "mul"
        else:
            q, gt, kind = f"What is {a} * {b} + {c}? First multiply, then add.", a * b + c, "muladd"
        out.append({"question": q, "prompt_messages": [{"role": "user", "content": f"{q}\n\n{TOY_PROMPT}"}],
                    "ground_truth": str(gt), "tools": tools.CLEAN_TOOLS, "source": "toy", "kind": kind,
                    "args": (a, b, c), "id": f"toy-{seed}-{len(out)}"})
    return out


def _tool_reply(code, protocol):
    """What the model reads back when `code` (ours) runs in the sandbox under `protocol` (tools.ToolProtocol's
    name): the sandbox's own script runner, in process, so a traceback is formatted as sandbox.py formats it with
    this interpreter's version; then the protocol's reply text for that result."""
    import contextlib
    import io
    import sys

    import sandbox
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    paper = protocol == "paper"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = sandbox._run_script(run := tools.paper_code(code) if paper else code, echo=not paper)
    finally:
        sys.argv = argv  # _run_script sets it for the code
    res = sandbox.ExecResult("ok" if rc == 0 else "error", out.getvalue(), err.getvalue(), 0.0)
    if paper:
        return tools.paper_observation(res, tools.PROTOCOLS["paper"]["max_chars"], run)
    return tools.observation({"name": tools.TOOL_NAME, "arguments": {"code": code}}, res, 1 << 20)


def toy_sft_conversations(n, seed, protocol="clean"):
    """Solved toy trajectories in the SFT format (messages + tools): call the tool, read it, answer; two-step
    problems call twice (copying the first result into the second call); a quarter of the trajectories first make
    a mistake (a NameError) and fix it from the traceback. Tool messages are the replies of `protocol`."""
    import random
    rng = random.Random(seed + 1)
    convs = []
    for p in toy_problems(n, seed):
        a, b, c = p["args"]
        msgs = list(p["prompt_messages"])
        if rng.random() < 0.25:
            msgs += [_call(f"print({a} * x)", "I compute it with code."),
                     {"role": "tool", "content": _tool_reply(f"print({a} * x)", protocol)}]
            first = "The code had a typo. I fix it."
        else:
            first = "I compute it with code."
        msgs += [_call(f"print({a} * {b})", first),
                 {"role": "tool", "content": _tool_reply(f"print({a} * {b})", protocol)}]
        if p["kind"] == "muladd":
            msgs += [_call(f"print({a * b} + {c})", f"The product is {a * b}. Now I add {c}."),
                     {"role": "tool", "content": _tool_reply(f"print({a * b} + {c})", protocol)}]
        msgs.append({"role": "assistant", "content": f"The answer is \\boxed{{{p['ground_truth']}}}.",
                     "reasoning_content": f"The tool printed {p['ground_truth']}."})
        convs.append({"messages": msgs, "tools": tools.CLEAN_TOOLS})
    return convs


def eval_problems(n=200):
    """The toy benchmark: n fixed problems (eval.py --bench toy)."""
    return toy_problems(n, seed=EVAL_SEED)
