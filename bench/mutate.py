"""Mutation testing: how many small, realistic bugs the fast tests catch (docs/testing.md).

One mutation at a time (an operator swapped, a comparison flipped, a constant changed, a condition negated, a call
dropped) is applied to a module's AST; the mutated module is executed in place of the real one in a forked copy of a
warm process (torch, transformers and the project already imported), and that module's fast tests run there with -x
and a per-mutant timeout. A mutant is killed when a test fails (or it crashes or hangs), survives when every test
passes. Mutated code never touches the disk, so tests that run a script in a subprocess would not see it: the test
subsets below are in-process ones.

    OMP_NUM_THREADS=1 python bench/mutate.py                         # every module (~30 min on 2 shared cores)
    OMP_NUM_THREADS=1 python bench/mutate.py --module sod_loss       # one module
    OMP_NUM_THREADS=1 python bench/mutate.py --module reward --list  # the mutants, without running them
    OMP_NUM_THREADS=1 python bench/mutate.py --module tools --only 12,40   # some mutants again (their ids)

Prints one line per surviving mutant (id, line, what changed, the source line) and the score per module: killed /
all, the share of mutants the tests catch. --out DIR keeps each mutant's pytest output.
"""
import argparse
import ast
import copy
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# what is mutated, and which fast in-process tests guard it (-k expressions deselect the slow or subprocess ones)
TARGETS = {
    # (the torch.compile switch is left alone: a performance path whose numbers test_compiled_matches_eager compares)
    "sod_loss": dict(tests=["tests/test_sod_loss.py", "tests/test_defaults.py"], k="not compiled",
                     skip_lines=("COMPILE", "_compiled")),
    "reward": dict(tests=["tests/test_reward_rules.py", "tests/test_protocol.py", "tests/test_scores.py",
                          "tests/test_data_reward.py", "tests/test_knobs.py", "tests/test_defaults.py"],
                   k="(reward_rules or grade or score or shaping or knob or default or pathological) and not "
                     "eval_command and not loss_knob and not tool_memory"),
    "tools": dict(tests=["tests/test_tool_rules.py", "tests/test_protocol.py", "tests/test_rollout.py",
                         "tests/test_knobs.py", "tests/test_defaults.py", "tests/test_data_reward.py"],
                  k="not hf_ and not vllm and not eval_command and not loss_knob and not realscale and not "
                    "make_engine and not toy_tokenizer"),
    # the trainer's loss path: the helpers it calls and train() from the advantages to the optimizer step
    # (its telemetry, logged and not trained on, is left alone: timers, the loss / clip / KL sums, grad norms)
    "train_sod": dict(tests=["tests/test_sod.py", "tests/test_alignment.py", "tests/test_knobs.py"],
                      k="micro_batches_fit or sequence_logprobs_match or sod_trainer or loss_knob",
                      functions=("micro_batches", "pad", "batch_tensors", "sequence_logprobs"),
                      span=("# ---- advantages", "# ---- push the new weights"),
                      skip_lines=("times[", "_sum", "gnorms")),
}

BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
         ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
CMPOP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
         ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
QUIET = ("print", "print0")  # calls whose arguments are messages, not behaviour
# -x: the first failure kills the mutant; no plugin autoload, no cache, no unraisable-exception hook (its gc passes
# over a heap of torch objects cost seconds a run)
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-W", "ignore"]


def _name(op):
    return type(op).__name__ if not isinstance(op, type) else op.__name__


def eligible_lines(src, spec):
    """The line numbers a target's mutants may sit on: all but those holding a skip_lines text, or only the
    `functions` and the `span` when the target names them."""
    text = src.splitlines()
    lines = {i for i, line in enumerate(text, 1) if not any(s in line for s in spec.get("skip_lines", ()))}
    if "functions" not in spec:
        return lines
    keep = lines
    tree, lines = ast.parse(src), set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in spec["functions"]:
            lines |= set(range(node.lineno, node.end_lineno + 1))
    a = next(i for i, line in enumerate(text, 1) if spec["span"][0] in line)
    b = next(i for i, line in enumerate(text, 1) if spec["span"][1] in line)
    return (lines | set(range(a, b))) & keep


def skipped(tree):
    """ids of nodes never mutated: docstrings, asserts (invariants, not behaviour), f-strings and messages."""
    out = set()
    for node in ast.walk(tree):
        inner = None
        if isinstance(node, ast.Assert | ast.JoinedStr):
            inner = node
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in QUIET:
            inner = node
        elif isinstance(node, ast.Raise):
            inner = node.exc
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            inner = node  # a docstring or a bare string
        if inner is not None:
            out |= {id(n) for n in ast.walk(inner)}
    return out


def sites(tree, lines):
    """(walk index, kind, description) of every mutation of `tree`, in a fixed order."""
    skip, out = skipped(tree), []
    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skip or not hasattr(node, "lineno") or node.lineno not in lines:
            continue
        if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in BINOP:
            out.append((i, "op", f"{_name(node.op)} -> {_name(BINOP[type(node.op)])}"))
        elif isinstance(node, ast.Compare):
            out += [(i, f"cmp{j}", f"{_name(op)} -> {_name(CMPOP[type(op)])}") for j, op in enumerate(node.ops)
                    if type(op) in CMPOP]
        elif isinstance(node, ast.BoolOp):
            out.append((i, "bool", f"{_name(node.op)} -> {'Or' if isinstance(node.op, ast.And) else 'And'}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.Invert):
            out.append((i, "unary", f"drop {_name(node.op)}"))
        elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
            out.append((i, "const", f"{node.value!r} -> {mutated_constant(node.value)!r}"))
        elif isinstance(node, ast.If | ast.While | ast.IfExp):
            out.append((i, "negate", "negate the condition"))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not (
                isinstance(node.value.func, ast.Name) and node.value.func.id in QUIET):
            out.append((i, "drop", f"drop the call {ast.unparse(node.value.func)}(...)"))
    return out


def mutated_constant(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return 1 if v == 0 else 0 if v == 1 else v + 1
    return 1.0 if v == 0 else v + 1.0


def mutate(tree, index, kind):
    """A copy of `tree` with mutation (index, kind) applied."""
    tree = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == index)
    if kind == "op":
        node.op = BINOP[type(node.op)]()
    elif kind.startswith("cmp"):
        j = int(kind[3:])
        node.ops[j] = CMPOP[type(node.ops[j])]()
    elif kind == "bool":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "unary":
        node.op = ast.UAdd() if not isinstance(node.op, ast.Not) else node.op
        if isinstance(node.op, ast.Not):  # `not x` -> `x`: replace in the parent
            _replace(tree, node, node.operand)
    elif kind == "const":
        node.value = mutated_constant(node.value)
    elif kind == "negate":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "drop":
        _replace(tree, node, ast.Pass())
    return ast.fix_missing_locations(tree)


def _replace(tree, old, new):
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[v is old for v in value].index(True)] = new
                return
    raise AssertionError("node without a parent")


def install(module, tree):
    """Execute the mutated module in place of `module`; names other modules imported from it (`from x import y`)
    are pointed at the new objects."""
    old = dict(module.__dict__)
    exec(compile(tree, module.__file__, "exec"), module.__dict__)
    moved = {id(v): module.__dict__[k] for k, v in old.items() if k in module.__dict__ and module.__dict__[k] is not v}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None) or ""
        if m is not module and f.startswith(ROOT):
            for k, v in list(vars(m).items()):
                if id(v) in moved:
                    setattr(m, k, moved[id(v)])


def run_one(module, tree, tests, k, timeout, log):
    """Fork, install the mutant, run the tests: 'killed' / 'survived' / 'timeout'."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            install(module, tree)
            for name, m in list(sys.modules.items()):  # test modules are imported again, so that what they compute
                if (getattr(m, "__file__", None) or "").startswith(os.path.join(ROOT, "tests", "test_")):  # at
                    del sys.modules[name]  # import time (tables of defaults, say) sees the mutant
            import pytest
            code = pytest.main([*tests, "-k", k, *PYTEST_ARGS])
        except BaseException as e:  # a mutant that breaks the import itself is caught too
            print(f"mutant crashed: {e!r}", flush=True)
        finally:
            sys.stdout.flush()
            os._exit(int(code))
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", action="append", choices=list(TARGETS), help="default: all")
    ap.add_argument("--only", default="", help="comma-separated mutant ids of the one --module")
    ap.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant (a hang counts as killed)")
    ap.add_argument("--out", default="", help="keep each mutant's pytest output in this directory")
    args = ap.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    out = args.out or os.path.join("/tmp", f"mutate_{os.getpid()}")
    os.makedirs(out, exist_ok=True)
    modules = args.module or list(TARGETS)
    import importlib
    if not args.list:  # warm the parent once: every fork starts with these imported
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        import torch
        torch.set_num_threads(1)
        import pytest  # noqa: F401
        for m in ("sod_loss", "sandbox", "common", "tools", "toy", "models", "data", "reward", "rollout", "report",
                  "train_sft", "train_sod", "eval"):
            importlib.import_module(m)
        sys.modules["models"].load_model("toy:tiny")  # transformers' Qwen3 classes
        s = torch.randn(2, 9)
        sys.modules["sod_loss"].sod_weights(s, s + 1, (s > 0).long())  # torch's first-op warm-up
    totals = {}
    for name in modules:
        spec = TARGETS[name]
        src = open(os.path.join(ROOT, name + ".py")).read()
        tree = ast.parse(src)
        found = sites(tree, eligible_lines(src, spec))
        ids = [int(x) for x in args.only.split(",") if x] or range(len(found))
        if args.list:
            for n in ids:
                i, kind, what = found[n]
                line = next(nd for j, nd in enumerate(ast.walk(tree)) if j == i).lineno
                print(f"{name} #{n} l.{line}: {what} | {src.splitlines()[line - 1].strip()[:90]}")
            print(f"{name}: {len(found)} mutants")
            continue
        module = importlib.import_module(name)
        import gc

        import pytest
        with open(os.devnull, "w") as null:  # the test modules imported (and assertion-rewritten) once, here
            saved, sys.stdout = sys.stdout, null
            try:
                pytest.main([*spec["tests"], "-k", spec["k"], "--collect-only", *PYTEST_ARGS])
            finally:
                sys.stdout = saved
        gc.freeze()  # the warm heap stays out of every child's garbage collections
        t0, result = time.time(), {"killed": 0, "timeout": 0, "survived": 0}
        for n in ids:
            i, kind, what = found[n]
            line = next(nd for j, nd in enumerate(ast.walk(tree)) if j == i).lineno
            verdict = run_one(module, mutate(tree, i, kind), spec["tests"], spec["k"], args.timeout,
                              os.path.join(out, f"{name}_{n}.log"))
            result[verdict] += 1
            if verdict == "survived":
                print(f"SURVIVED {name} #{n} l.{line}: {what} | {src.splitlines()[line - 1].strip()[:90]}",
                      flush=True)
        done = sum(result.values())
        killed = result["killed"] + result["timeout"]
        totals[name] = (killed, done)
        print(f"{name}: {killed}/{done} killed ({100 * killed / max(done, 1):.1f} %; {result['timeout']} by timeout), "
              f"{result['survived']} survived, {time.time() - t0:.0f}s", flush=True)
    if totals and not args.only:
        k, n = sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values())
        print(f"mutation score: {k}/{n} = {100 * k / max(n, 1):.1f} % killed over {', '.join(totals)}")


if __name__ == "__main__":
    main()
