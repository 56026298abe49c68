#!/usr/bin/env python3
"""Import cycles between lyss-core's top-level modules (error, config, policy, pipeline …).

A module depends on another when its code names it (`crate::other::…`, `$crate::other::…`,
or a `use crate::{other, …}` group). Tests (`#[cfg(test)]` modules, `tests.rs` files) and the
`testing` module (the conformance suites, which use everything) are left out. Prints each
cycle and exits 1 if there is one; `--graph` prints every edge. Run: scripts/module-cycles.py
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "lyss-core" / "src"
IGNORED = {"testing", "lib"}


def top(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def code(path: pathlib.Path) -> str:
    text = path.read_text()
    # Drop an inline `#[cfg(test)] mod tests { … }` (always last in this crate) and comments.
    cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests \{", text, re.M)
    if cut:
        text = text[: cut.start()]
    return re.sub(r"//[^\n]*", "", text)


def edges() -> dict[str, set[str]]:
    modules = {top(p) for p in SRC.rglob("*.rs")} - IGNORED
    deps: dict[str, set[str]] = {m: set() for m in modules}
    for path in SRC.rglob("*.rs"):
        m = top(path)
        if m in IGNORED or path.name == "tests.rs" or "tests" in path.relative_to(SRC).parts:
            continue
        text = code(path)
        named = set(re.findall(r"\$?crate::(\w+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            named |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
        deps[m] |= {n for n in named if n in modules and n != m}
    return deps


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps[v]):
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
                out.append(sorted(comp))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    deps = edges()
    if "--graph" in sys.argv:
        for m in sorted(deps):
            print(f"{m} -> {', '.join(sorted(deps[m])) or '(nothing)'}")
    found = cycles(deps)
    for comp in found:
        inner = {m: sorted(deps[m] & set(comp)) for m in comp}
        print("cycle:", "; ".join(f"{m} -> {', '.join(d)}" for m, d in inner.items()))
    if not found:
        print(f"no import cycle between lyss-core's {len(deps)} top-level modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
