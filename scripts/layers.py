#!/usr/bin/env python3
"""Prints natsgate's module graph and fails on an import loop.

`python3 scripts/layers.py` reads every `crate::<module>` path in src/
(the library; src/main.rs and src/bin/ are left out), builds the graph of
top-level modules, prints it as layers (each module only uses modules in
lower layers), and exits 1 naming the modules of any loop. The modules
inside `session/` are checked the same way.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
# Re-exports at the crate root, by the module they come from.
ALIASES = {"Error": "error", "run": "service", "run_with_listeners": "service", "run_with_websocket": "service"}


def module_of(path: Path, base: Path) -> str:
    rel = path.relative_to(base)
    return rel.parts[0].removesuffix(".rs")


def code_lines(path: Path):
    """The file without comments and without its `#[cfg(test)]` tail."""
    text = path.read_text()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    for line in text.splitlines():
        line = line.split("//", 1)[0]
        if line.strip():
            yield line


def graph(base: Path, files, prefix: str):
    """Edges between the modules of `files` (all under `base`)."""
    names = {module_of(f, base) for f in files}
    edges = {name: set() for name in names}
    for f in files:
        me = module_of(f, base)
        for line in code_lines(f):
            for target in re.findall(prefix, line):
                target = ALIASES.get(target, target)
                if target in names and target != me:
                    edges[me].add(target)
    return edges


def layers(edges):
    """Topological layers, lowest first; raises on a loop."""
    placed, result = set(), []
    while len(placed) < len(edges):
        layer = sorted(
            m for m, deps in edges.items() if m not in placed and deps <= placed
        )
        if not layer:
            loop = sorted(m for m in edges if m not in placed)
            raise SystemExit(f"import loop among: {', '.join(loop)}")
        result.append(layer)
        placed.update(layer)
    return result


def show(title, edges):
    print(title)
    for depth, layer in reversed(list(enumerate(layers(edges)))):
        for module in layer:
            uses = ", ".join(sorted(edges[module])) or "-"
            print(f"  {depth}  {module:<14} uses {uses}")


def main() -> int:
    lib = [p for p in ROOT.rglob("*.rs") if p.parts[len(ROOT.parts)] not in ("main.rs", "bin")]
    lib = [p for p in lib if p.name != "lib.rs"]
    show("crate (layer, module, what it uses):", graph(ROOT, lib, r"\bcrate::([A-Za-z_][A-Za-z0-9_]*)"))
    session = ROOT / "session"
    inner = [p for p in session.rglob("*.rs") if p.name != "mod.rs"]
    print()
    show("session/:", graph(session, inner, r"\bsuper::([a-z_][a-z0-9_]*)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
