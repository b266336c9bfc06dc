"""The layout: every top-level module imports only modules below it (lazy imports inside functions included), so
there is no import circle and each file can be read and tested on its own; no file outgrows its line budget."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bottom to top; a module may import only modules of a lower level
LEVELS = [("sod_loss", "sandbox", "common", "runs"), ("tools",), ("toy",), ("models",), ("data",), ("reward",),
          ("rollout",), ("report",), ("train_sft", "train_sod", "eval")]
LEVEL = {m: i for i, ms in enumerate(LEVELS) for m in ms}


def top_level_modules():
    return sorted(f[:-3] for f in os.listdir(ROOT) if f.endswith(".py"))


def project_imports(source, modules):
    """Names of `modules` that `source` imports anywhere (top level, inside functions, `from x import y`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & set(modules)


def import_graph():
    mods = top_level_modules()
    return {m: project_imports(open(os.path.join(ROOT, m + ".py")).read(), mods) - {m} for m in mods}


def test_every_top_level_module_has_a_level():
    assert set(top_level_modules()) == set(LEVEL), "a new top-level file needs its place in LEVELS"


def test_the_reader_sees_lazy_and_from_imports():
    src = "import os\nimport tools\ndef f():\n    import data\n    from rollout import Episode\n"
    assert project_imports(src, ["tools", "data", "rollout", "toy"]) == {"tools", "data", "rollout"}


def test_imports_only_run_down_the_order():
    up = [f"{m} imports {n}" for m, ns in import_graph().items() for n in sorted(ns) if LEVEL[n] >= LEVEL[m]]
    assert not up, "imports that run up (or across) the layer order: " + "; ".join(up)


def test_no_import_circle():
    graph = import_graph()

    def reaches(a, b, seen):
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph[a])
    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles, f"modules on an import circle: {circles}"


def test_line_budgets():
    over = {m: n for m in top_level_modules()
            if (n := sum(1 for _ in open(os.path.join(ROOT, m + ".py")))) > (600 if m == "sandbox" else 500)}
    assert not over, f"files over their line budget (500; sandbox.py 600): {over}"


def test_no_local_name_shadows_a_project_module():
    """A parameter or local named like an imported module (`tools`, `models`, ...) hides it in that function: a
    `tools.TOOLS` there reads an attribute of the argument, which only fails when that line runs."""
    mods = set(top_level_modules())
    files = [os.path.join(ROOT, m + ".py") for m in mods] + [
        os.path.join(ROOT, d, f) for d in ("tests", "bench") for f in os.listdir(os.path.join(ROOT, d))
        if f.endswith(".py")]
    bad = []
    for path in files:
        tree = ast.parse(open(path).read())
        imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} & mods
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                names = {a.arg for a in f.args.args + f.args.kwonlyargs}
                names |= {n.id for n in ast.walk(f) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                bad += [f"{os.path.relpath(path, ROOT)}:{f.lineno} {sorted(names & imported)}"] if names & imported \
                    else []
    assert not bad, f"local names that shadow an imported project module: {bad}"
