"""The project speaks of itself only: no file cites a document a user's clone does not have. Every docs/<name>.md
named anywhere exists, every relative link of a Markdown file leads to a file of the repo, and no file points at
notes that never ship (the forbidden names are spelled in pieces so that this file does not cite them itself)."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEVER_SHIPPED = ["DES" + "IGN", "STY" + "LE.md", ".." + "/shared"]


def repo_files():
    """The tracked files (a git checkout), else every file under the root but outputs and caches."""
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode == 0:
        return [f for f in r.stdout.splitlines() if os.path.isfile(os.path.join(ROOT, f))]
    return [os.path.relpath(os.path.join(d, f), ROOT) for d, subdirs, files in os.walk(ROOT) for f in files
            if not {".git", "out", "__pycache__"} & set(os.path.relpath(d, ROOT).split(os.sep))]


def texts():
    for f in repo_files():
        try:
            yield f, open(os.path.join(ROOT, f), encoding="utf-8").read()
        except UnicodeDecodeError:  # images and other binaries cite nothing
            continue


def test_no_file_cites_a_document_the_repo_lacks():
    missing, never = [], []
    for f, text in texts():
        for name in sorted(set(re.findall(r"docs/[\w.-]+?\.md\b", text))):
            if not os.path.isfile(os.path.join(ROOT, name)):
                missing.append(f"{f}: {name}")
        if f.endswith(".md"):  # relative links: [text](path#anchor)
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
                if "://" not in target and not target.startswith("mailto:") and \
                        not os.path.exists(os.path.join(ROOT, os.path.dirname(f), target)):
                    missing.append(f"{f}: link {target}")
        never += [f"{f}: {word}" for word in NEVER_SHIPPED if re.search(rf"(?<!\w){re.escape(word)}", text)]
    assert not missing, "documents cited but not in the repo: " + "; ".join(missing)
    assert not never, "references to notes that never ship: " + "; ".join(never)
