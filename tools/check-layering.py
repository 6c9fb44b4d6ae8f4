#!/usr/bin/env python3
"""The dependency rules of docs/ARCHITECTURE.md, checked on the source tree.

1. Crates: each workspace crate depends only on the dawnrun crates below it in the flow.
2. src/: each top-level module imports (`crate::x`) only modules declared before it in
   src/lib.rs, which lists them in flow order; the binaries call only `dawnrun::commands`.
3. No circles between the modules of any crate (top-level modules, and files within a folder
   module through `super::` or the folder's own `crate::` path). `crate::{a, b}` groups count
   name by name, across lines.
4. `tensorflow` is named only in src/model; `mpi` only in crates/dist; `dawnrun_dist` never in
   src/model or src/checkpoint (the graph knows no ranks).

Prints every violation with its file and line; exits 1 if there is any.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
errors = []

# Which dawnrun crates each crate may depend on (normal dependencies).
ALLOWED = {
    "dawnrun-records": set(),
    "dawnrun-schedule": set(),
    "dawnrun-data": {"dawnrun-records"},
    "dawnrun-dist": {"dawnrun-schedule"},
    "build-records": {"dawnrun-records"},
    "make-synthetic": set(),
    "dawnrun": {"dawnrun-records", "dawnrun-schedule", "dawnrun-data", "dawnrun-dist"},
}


def rs_files(folder):
    for base, _, names in os.walk(folder):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(base, n)


def code_lines(path):
    """(line number, text) of each line, with // comments dropped."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            yield i, line.split("//", 1)[0]


def rel(path):
    return os.path.relpath(path, ROOT)


def check_crates():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    for pkg in meta["packages"]:
        name = pkg["name"]
        if name not in ALLOWED:
            errors.append(f"Cargo: unknown workspace crate {name}: add it to check-layering.py")
            continue
        for dep in pkg["dependencies"]:
            if dep["kind"] is not None:
                continue
            d = dep["name"]
            if d in ALLOWED and d not in ALLOWED[name]:
                errors.append(f"{rel(pkg['manifest_path'])}: {name} depends on {d}, against the flow")


def crate_roots():
    roots = {"dawnrun": os.path.join(ROOT, "src")}
    for group in ("crates", "tools"):
        for n in sorted(os.listdir(os.path.join(ROOT, group))):
            src = os.path.join(ROOT, group, n, "src")
            if os.path.isdir(src):
                roots[n] = src
    return roots


def top_module(src, path):
    """`model` for src/model/graph.rs, `plan` for src/plan.rs; None for lib.rs/main.rs/bin."""
    parts = os.path.relpath(path, src).split(os.sep)
    if parts[0] == "bin" or parts[0] in ("lib.rs", "main.rs"):
        return None
    return parts[0][:-3] if parts[0].endswith(".rs") else parts[0]


def find_cycle(edges):
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m, stack)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n, [])
            if found:
                return found
    return None


CRATE_REF = re.compile(r"\bcrate::(\{|\w+)")
SUPER_REF = re.compile(r"\bsuper::(\w+)")


def group_names(text, at):
    """The first name of each top-level item of the `{...}` group opening at `text[at]`:
    `a`, `b` for `{a::X, b::{Y, Z}}` (a group may span lines and nest)."""
    depth, item, names = 0, "", []
    for ch in text[at:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                names.append(item)
                break
        if depth == 1 and ch == ",":
            names.append(item)
            item = ""
        elif depth >= 1:
            item += ch
    firsts = (re.match(r"\s*(\w+)", n) for n in names)
    return [m.group(1) for m in firsts if m and m.group(1) != "self"]


def crate_refs(path, prefix=""):
    """(line, name) for each `crate::<prefix>name` in the file, comments left out, each
    top-level name of a `crate::<prefix>{a, b}` group included."""
    text = "".join(line.rstrip("\n") + "\n" for _, line in code_lines(path))
    pattern = re.compile(r"\bcrate::" + re.escape(prefix) + r"(\{|\w+)")
    for m in pattern.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1) == "{":
            for name in group_names(text, m.start(1)):
                yield line, name
        else:
            yield line, m.group(1)


def check_cycles(name, src):
    edges = {}
    for path in rs_files(src):
        me = top_module(src, path)
        if me is None:
            continue
        for _, m in crate_refs(path):
            if m != me:
                edges.setdefault(me, set()).add(m)
    cycle = find_cycle(edges)
    if cycle:
        errors.append(f"{name}: modules import each other in a circle: {' -> '.join(cycle)}")
    # Inside each folder module: files that import each other through `super::`.
    for base, _, names in os.walk(src):
        if os.path.abspath(base) == os.path.abspath(src) or "bin" in os.path.relpath(base, src).split(os.sep):
            continue
        local = {}
        # The folder's own path from the crate root, as `crate::model::` names it.
        folder = "::".join(os.path.relpath(base, src).split(os.sep)) + "::"
        for n in names:
            if not n.endswith(".rs") or n == "mod.rs":
                continue
            me = n[:-3]
            path = os.path.join(base, n)
            refs = [m for _, line in code_lines(path) for m in SUPER_REF.findall(line)]
            refs += [m for _, m in crate_refs(path, folder)]
            for m in refs:
                if m != me and os.path.exists(os.path.join(base, m + ".rs")):
                    local.setdefault(me, set()).add(m)
        cycle = find_cycle(local)
        if cycle:
            errors.append(f"{rel(base)}: files import each other in a circle: {' -> '.join(cycle)}")


def check_flow_in_src():
    src = os.path.join(ROOT, "src")
    order = []
    for _, line in code_lines(os.path.join(src, "lib.rs")):
        m = re.match(r"\s*pub mod (\w+);", line)
        if m:
            order.append(m.group(1))
    rank = {m: i for i, m in enumerate(order)}
    for path in rs_files(src):
        me = top_module(src, path)
        if me is None:
            if "/bin/" in path:
                for i, line in code_lines(path):
                    for m in re.findall(r"\bdawnrun::(\w+)", line):
                        if m != "commands":
                            errors.append(f"{rel(path)}:{i}: a binary uses dawnrun::{m}; binaries only call dawnrun::commands")
            continue
        if me not in rank:
            msg = f"src/{me}: module {me} is not declared in src/lib.rs"
            if msg not in errors:
                errors.append(msg)
            continue
        for i, m in crate_refs(path):
            if m in rank and rank[m] > rank[me]:
                errors.append(f"{rel(path)}:{i}: {me} imports crate::{m}, which comes later in the flow")


def check_names():
    rules = [
        (re.compile(r"\btensorflow::|\buse tensorflow\b"), lambda p: p.startswith("src/model/"),
         "tensorflow named outside src/model"),
        (re.compile(r"\bmpi::|\buse mpi\b"), lambda p: p.startswith("crates/dist/"),
         "mpi named outside crates/dist"),
        (re.compile(r"\bdawnrun_dist\b"),
         lambda p: not (p.startswith("src/model/") or p.startswith("src/checkpoint/")),
         "dawnrun_dist named in src/model or src/checkpoint (the graph knows no ranks)"),
    ]
    for name, src in crate_roots().items():
        for path in rs_files(src):
            p = rel(path)
            for i, line in code_lines(path):
                for pattern, allowed, what in rules:
                    if pattern.search(line) and not allowed(p):
                        errors.append(f"{p}:{i}: {what}")


check_crates()
for crate, src in crate_roots().items():
    check_cycles(crate, src)
check_flow_in_src()
check_names()
for e in errors:
    print("layering:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
