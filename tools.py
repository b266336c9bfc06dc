"""The `code_interpreter` tool as the model sees it: its schema, how a turn's tool calls are parsed, run and answered,
and the token ids that carry the answers back.

Two protocols (docs/fidelity.md has the table): "paper" reproduces the original recipe's tool I/O byte for byte,
quirks included (each quirk names the original's file); "clean" is what we would design without history (the toy's
default). Nothing here runs code itself: `tool_turn` takes a sandbox executor (sandbox.make_executor).
"""

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

TOOL_NAME = "code_interpreter"


def _schema(description, code_description):
    return [{"type": "function", "function": {
        "name": TOOL_NAME, "description": description,
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": code_description}},
                       "required": ["code"]}}}]


# The schema the released models and the teacher saw, verbatim from recipe/demystify/sandbox_fusion_tool_config.yaml
# (rendered through the template's `tools`, key order as verl's model_dump gives it). Real datasets use it.
TOOLS = _schema("A tool for executing code.", "The code to execute.")
# The toy's schema: it describes the clean protocol's echo of a final bare expression.
CLEAN_TOOLS = _schema("Run a Python script and return what it prints. The value of a final bare expression is printed "
                      "too. State does not persist between calls.", "The Python code to run.")


# -----------------------------------------------------------------------------
# Tool calls


def parse_tool_calls(text):
    """Hermes tool calls in an assistant turn -> [{"name", "arguments"}] or {"error": why} per malformed call, which
    the model gets back as the tool response; [] when the turn calls nothing."""
    calls = []
    for m in re.finditer(r"<tool_call>(.*?)(</tool_call>|$)", text, re.S):
        body, closed = m.group(1).strip(), m.group(2)
        if not closed:
            calls.append({"error": "unclosed <tool_call> tag: close every call with </tool_call>"})
            continue
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            calls.append({"error": f"the tool call is not valid JSON ({e.msg} at char {e.pos})"})
            continue
        if not isinstance(obj, dict):
            calls.append({"error": 'a tool call must be a JSON object {"name": ..., "arguments": {...}}'})
            continue
        if obj.get("name") != TOOL_NAME:
            calls.append({"error": f"unknown tool {obj.get('name')!r}; the only tool is {TOOL_NAME!r}"})
            continue
        args = obj.get("arguments")
        if isinstance(args, str):  # some models send the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            calls.append({"error": 'the "arguments" of a tool call must be a JSON object like {"code": "..."}'})
        elif not isinstance(args.get("code"), str):
            calls.append({"error": 'code_interpreter needs a string argument "code"'})
        else:
            calls.append({"name": TOOL_NAME, "arguments": {"code": args["code"]}})
    return calls


@dataclass(frozen=True)
class ToolProtocol:
    """How tool calls are run and answered (docs/fidelity.md). "paper" is the original recipe, quirks included (the
    files named below are the original's); "clean" is what we would design without history (the toy's default)."""
    name: str = "clean"  # paper | clean
    max_chars: int = 2048  # characters of tool output the model reads back per call
    timeout: float = 10.0  # seconds per call
    memory_mb: int = 2048  # per call (the caller builds its executor with it)
    max_calls: int = 0  # calls run per assistant turn, in order (0 = all)


PROTOCOLS = {  # paper: sandbox_fusion_tool_config.yaml (60 s, 2048 MB), rollout.yaml (256 chars, 1 call per turn)
    "paper": dict(max_chars=256, timeout=60.0, memory_mb=2048, max_calls=1),
    "clean": dict(max_chars=2048, timeout=10.0, memory_mb=2048, max_calls=0),
}


def tool_protocol(name="clean", **overrides):
    """The ToolProtocol `name` with some fields overridden (None leaves the protocol's value)."""
    if name not in PROTOCOLS:
        raise SystemExit(f"tools: unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return ToolProtocol(name, **(PROTOCOLS[name] | {k: v for k, v in overrides.items() if v is not None}))


def protocol_of(cfg):
    """The ToolProtocol of a train_sod.py / eval.py config: its `protocol` with the tool knobs it sets."""
    return tool_protocol(cfg.protocol, max_chars=cfg.max_obs_chars or None, timeout=cfg.tool_timeout or None,
                         max_calls=None if cfg.tool_max_calls < 0 else cfg.tool_max_calls,
                         memory_mb=cfg.tool_memory_mb or None)


# Fixed reply texts of the paper protocol, verbatim from verl/tools/sandbox_fusion_tools.py (a program that did not
# run to its end) and verl/experimental/agent_loop/tool_agent_loop.py (a call it could not make).
PAPER_NO_OUTPUT = "no stdout here"
PAPER_CALL_ERROR = "Error when executing tool: {}"
PAPER_CUT = "...(truncated)..."


def paper_code(code):
    """The code the original runs (recipe/demystify/reward.py CustomSandboxFusionTool): the first ```python block
    when there is one, then the last non-empty line wrapped in print(...) unless it starts with "print", textually
    (so a last line `x = 5` becomes a TypeError the model reads back)."""
    blocks = re.findall(r"```python(.*?)```", code, re.S)
    lines = (blocks[0].strip() if blocks else code).split("\n")
    for i in reversed(range(len(lines))):
        if lines[i] != "":
            lines[i] = lines[i] if lines[i].startswith("print") else f"print({lines[i]})"
            break
    return "\n".join(lines)


def paper_timeout(t, cap):
    """The seconds a call's own `timeout` argument gives the run (recipe/demystify/reward.py l.61 passes it on
    unchecked), capped at `cap` (ours; the original has no cap), or None where the original's client cannot make the
    call (sandbox_fusion/utils.py l.115 `t + t + 10`: a str, null, list or dict raises; `requests` refuses a total
    <= 0, NaN or one past a C timestamp) or the server times out at once (t <= 0): the model reads `no stdout here`.
    true is 1 s (JSON true is 1 to Python and to the server's float field)."""
    if not isinstance(t, (int, float)):
        return None
    try:
        ok = t > 0 and 2 * t + 10 < 2 ** 63 / 1e9  # NaN and inf fail too
    except OverflowError:  # an int past float range
        return None
    return min(float(t), cap) if ok else None


def _paper_turn(text, execute, proto):
    """The original's hermes parsing and call (tool_parser.py, tool_agent_loop.py): calls whose JSON or name /
    arguments keys fail, or whose name is not a string, are dropped; none left ends the episode; only the first
    max_calls run; a call the tool cannot make (unknown name, arguments without a string "code") is answered with
    the error's text, uncut; a `language` other than "python" or an unusable `timeout` argument with
    `no stdout here`."""
    if "<tool_call>" not in text or "</tool_call>" not in text:
        return None
    parsed, dropped = [], 0
    for body in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S):
        try:
            obj = json.loads(body)
            name, args = obj["name"], obj["arguments"]
            if not isinstance(name, str):  # tool_parser.py l.29-39, l.99: pydantic's FunctionCall(name: str)
                raise TypeError(name)
            parsed.append({"name": name, "arguments": args})
        except Exception:  # the original drops the call whatever went wrong (not JSON, not a dict, a missing key)
            dropped += 1
    if not parsed:
        return {"calls": [{"error": "unparsable tool call"}] * dropped, "status": ["malformed"] * dropped,
                "observations": [], "end": True}
    calls, status, obs = parsed[:proto.max_calls or None], [], []
    for c in calls:
        try:
            if c["name"] != TOOL_NAME:
                raise KeyError(c["name"])  # the original looks the name up in its dict of tools
            args = c["arguments"]
            code = paper_code(args["code"])  # reward.py l.46-59: the Python errors of bad arguments, in this order
            timeout = paper_timeout(args.get("timeout", proto.timeout), proto.timeout)
            # sandbox_fusion/utils.py l.96: a language SandboxFusion runs but not "python" (bash, cpp, ...) is
            # answered as the client answers a server that cannot run it; the code must encode as UTF-8 (the server
            # writes it to a file, major.py l.75)
            if args.get("language", "python") != "python" or timeout is None or not _utf8(code):
                status.append("error")
                obs.append(PAPER_NO_OUTPUT)
                continue
            res = execute(code, timeout, echo=False)
            status.append(res.status)
            obs.append(paper_observation(res, proto.max_chars, code))
        except Exception as e:  # the same Python errors the original's tool raises on bad arguments
            status.append("malformed")
            obs.append(PAPER_CALL_ERROR.format(e))  # not cut: tool_agent_loop.py l.293-297 return before l.302-310
    return {"calls": calls, "status": status, "observations": obs, "end": False}


def _utf8(text):
    try:
        text.encode()
        return True
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800")
        return False


def paper_observation(result, max_chars, code=None):
    """The text the model reads back for one call under "paper" (`result` is a sandbox ExecResult, or the reply
    text itself), middle cut to max_chars: stdout + stderr of a program that ran to its end as SandboxFusion returns
    them (paper_streams), the fixed text otherwise (verl/tools/sandbox_fusion_tools.py l.184-189)."""
    text = result if isinstance(result, str) else \
        paper_streams(result, code) if result.status in ("ok", "error", "memory") else None
    text = PAPER_NO_OUTPUT if text is None else text
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + PAPER_CUT + text[-half:]
    return text


# SandboxFusion's runner reads a stream into asyncio's buffer until 2 x its 64 KiB limit, then stops reading: past
# that the program never reaches EOF, and the run ends as TimeLimitExceeded (sandbox/runners/base.py l.58-92)
PAPER_STREAM_BYTES = 131072
_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's names: "tmp" + 8 of these


def paper_script(code):
    """The file SandboxFusion runs the code as: a NamedTemporaryFile in a TemporaryDirectory under /tmp
    (sandbox/runners/major.py l.72-83). Its names are random; ours are drawn from the code, so runs repeat."""
    rnd = random.Random(code.encode(errors="surrogatepass"))
    return "/tmp/tmp{}/tmp{}.py".format(*("".join(rnd.choices(_TEMP_CHARS, k=8)) for _ in "ab"))


def paper_streams(result, code=None):
    """stdout + stderr as the original reads them from SandboxFusion, which runs the code on Python 3.10 as the file
    paper_script(code): None (the model reads `no stdout here`) when a stream exceeds PAPER_STREAM_BYTES; a stream
    that is not UTF-8 reads `[DecodeError] {the error}` (sandbox/utils/execution.py l.32-37); tracebacks name the
    file and have no ~^~ lines (3.11 added them). From our pool's bytes (result.raw), else from the texts."""
    streams = []
    for raw, text in zip(result.raw or (None, None), (result.stdout, result.stderr)):
        raw = text.encode(errors="surrogatepass") if raw is None else raw
        if len(raw) > PAPER_STREAM_BYTES:
            return None
        try:
            streams.append(raw.decode())
        except UnicodeDecodeError as e:
            streams.append(f"[DecodeError] {e}")
    out, err = streams
    if code is not None:  # sandbox.SCRIPT -> the file; a warning's `<code>:3: UserWarning` too
        script = paper_script(code)
        err = re.sub(r'(?m)^(  File )"<code>"(, line \d+)|^<code>(:\d+: )',
                     lambda m: f'{m[1]}"{script}"{m[2]}' if m[1] else script + m[3], err)
    # a frame's position carets (3.11+; under a source line under `File ..., line N, in f`): not a SyntaxError's
    err = re.sub(r'(?m)^(  File "[^"\n]*", line \d+, in .*\n    .*\n)[ \t]*[~^]+[ \t]*\n', r"\1", err)
    return out + err


def observation(call, result, max_chars):
    """The text the model reads back for one call under "clean"; `result` is a sandbox ExecResult (None for
    malformed calls)."""
    if "error" in call:
        text = f"Error: {call['error']}"
    elif result.status == "ok":
        text = result.stdout.rstrip() or "(no output)"
    elif result.status == "timeout":
        text = result.stdout + f"\nTimeoutError: the code ran longer than the time limit ({result.elapsed_s:.0f}s)"
    else:
        text = (result.stdout + "\n" + result.stderr).strip() or f"Error: execution {result.status}"
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n... [truncated {len(text) - max_chars} characters]"
    return text


def tool_turn(text, execute, proto):
    """Run the tool calls of one assistant turn under `proto`. None when the turn calls no tool (the episode ends
    with its answer); else {"calls", "status" (ok | error | timeout | memory | killed | malformed), "observations"
    (one reply per call run), "end" (the episode ends now: a paper turn whose calls all fail to parse)}.
    `execute(code, timeout, echo=...)` is a sandbox executor; thread-safe, so many turns may run at once."""
    if proto.name == "paper":
        return _paper_turn(text, execute, proto)
    calls = parse_tool_calls(text)[:proto.max_calls or None]
    if not calls:
        return None

    def run(c):  # clean: an AST echo of a final bare expression; malformed calls get an error reply
        return None if "error" in c else execute(c["arguments"]["code"], proto.timeout, echo=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, calls))
    return {"calls": calls, "status": ["malformed" if r is None else r.status for r in results],
            "observations": [observation(c, r, proto.max_chars) for c, r in zip(calls, results)], "end": False}


def tool_response_ids(tok, contents, proto):
    """Token ids that follow an assistant turn's <|im_end|> and carry `contents` back as tool messages, up to the
    next assistant generation prompt. clean: the suffix the full template renders (from the newline after
    <|im_end|>), by diffing two renders of a dummy chat (the prefix property: the longer render must extend the
    shorter one token for token). paper: the tool messages rendered on their own, as the original's agent loop does
    (tool_agent_loop.py), so without that newline."""
    tools = [{"role": "tool", "content": c} for c in contents]
    if proto.name == "paper":
        empty = tok.apply_chat_template([{}], tokenize=True, return_dict=False)  # the original's "system prompt"
        return tok.apply_chat_template(tools, add_generation_prompt=True, tokenize=True, return_dict=False)[len(empty):]
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    base = tok.apply_chat_template(chat, tokenize=True, return_dict=False)
    full = tok.apply_chat_template(chat + tools, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert full[:len(base)] == base, "chat template breaks the prefix property: cannot append tool turns by ids"
    end = max(i for i, t in enumerate(base) if t == tok.convert_tokens_to_ids("<|im_end|>"))
    return full[end + 1:]

