#!/usr/bin/env python3
"""Checks the layering rules of the workspace (run by scripts/test.sh; docs/architecture.md).

1. No crate depends on a front-door crate (crates/doors/{grpc,http,pg,datacell}) except the binary
   (crates/cli): doors are siblings, and only the composition root knows them all.
2. Within each crate, no import circle among its modules: module A uses module B (a
   `crate::b` path, `super::b`, or a child module it declares) and B, directly or through
   others, uses A. A module and its own submodules count as one module here only through
   the paths they write, so `mod.rs` declaring a child is not an edge.

Prints each violation and exits 1 if there is any.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOORS = {"streamcell-grpc", "streamcell-http", "streamcell-pg", "streamcell-datacell"}
BINARY = "streamcell"


def crate_graph_violations():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    out = []
    for pkg in meta["packages"]:
        if pkg["name"] == BINARY:
            continue
        for dep in pkg["dependencies"]:
            if dep["name"] in DOORS and dep.get("kind") in (None, "normal", "build"):
                out.append(f"crate {pkg['name']} depends on the door crate {dep['name']}")
    return out, meta


def module_of(src_dir: Path, path: Path) -> str:
    rel = path.relative_to(src_dir).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


USE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)")
SUPER_PATH = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def module_cycles(src_dir: Path):
    files = [p for p in src_dir.rglob("*.rs")]
    modules = {module_of(src_dir, p): p for p in files}
    names = set(modules)
    edges = {m: set() for m in names}
    for m, p in modules.items():
        text = strip_comments(p.read_text())
        # Test modules may use anything of their parent.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        targets = []
        for full in USE_PATH.findall(text):
            targets.append(full.split("::"))
        parent = m.split("::")[:-1] if m != "crate" else []
        for child in SUPER_PATH.findall(text):
            targets.append(parent[:-1] + [child] if p.name == "mod.rs" else parent + [child])
        for parts in targets:
            # The longest prefix that names a module of this crate.
            for n in range(len(parts), 0, -1):
                cand = "::".join(parts[:n])
                if cand in names:
                    if cand != m and not cand.startswith(m + "::") and not m.startswith(cand + "::"):
                        edges[m].add(cand)
                    break
    # Tarjan's strongly connected components.
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(names):
        if v not in index:
            visit(v)
    return sccs, edges


def main():
    problems, meta = crate_graph_violations()
    for pkg in meta["packages"]:
        for target in pkg["targets"]:
            if "lib" not in target["kind"] and "bin" not in target["kind"]:
                continue
            src_dir = Path(target["src_path"]).parent
            if not str(src_dir).startswith(str(ROOT)) or "vendor" in src_dir.parts:
                continue
            sccs, edges = module_cycles(src_dir)
            for comp in sccs:
                ties = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
                line = (
                    f"{pkg['name']} ({target['name']}): import circle among "
                    f"{', '.join(comp)}: {'; '.join(ties)}"
                )
                problems.append(line)
    for p in problems:
        print(f"layering: {p}")
    if problems:
        sys.exit(1)
    print("layering: no crate depends on a door but the binary; no module import circles")


if __name__ == "__main__":
    main()
