#!/usr/bin/env python3
"""Line, branch and loop coverage of kiln's kernel sources from the emulator's tests.

    scripts/coverage.py OBJDIR [RUNS] [--exemptions FILE] [--json OUT] [--no-check]

scripts/coverage.sh builds the emulated kernel objects with gcc's --coverage
(KILN_EMU_COVERAGE=1, build/emu.rs; OBJDIR is the build's $OUT_DIR/emu, where each object's
.gcno lies), runs every test of the suite in a process of its own with GCOV_PREFIX pointing
at RUNS/<n>/ (so each test's counts land in their own .gcda files, RUNS/<n>/name naming the
test) and calls this. Without RUNS, the .gcda files beside the objects are read as one run.
Python 3 standard library, gcov and gcov-tool (gcc 12, the compiler of the emulated build).

It reports, per file under kernels/ (kernels/*.cu, kernels/common/*.cuh,
kernels/equivariant/*.cuh; not the emulator, kernels/emu/):

- lines, from `gcov --branch-counts --json-format` on the runs merged (gcov-tool merge).
  A line is executable when gcov has it (some basic block of the emulated build carries
  it) and executed when a block on it ran, in any function or template instantiation.
  Code the emulated build does not compile (`#ifndef KILN_EMU`, the `#else` of
  `#ifdef KILN_EMU`, `__CUDA_ARCH__`-only code, a template never instantiated) has no
  block, so it is not applicable rather than unexecuted; so are comments and braces.
- branches: gcov's branch arcs, leaving out the ones that only an exception takes
  (reported, not gated).
- loops: every loop of every instrumented function's control-flow graph, read from the
  .gcno (blocks, arcs, lines) and each run's .gcda (arc counts); see LOOPS.

and fails (exit 1) on
  (a) an executable kernel line that never ran;
  (b) a loop that was entered but never ran two iterations in one entry in any test;
  (c) a stale exemption: one whose lines all pass now, or that names no executable line;
unless (a) or (b) is listed in the exemption file, kernels/coverage-exemptions.txt:

    # comment
    kernels/padding.cu:123  reason (mandatory: why no test can reach it)
    kernels/padding.cu:130-132  reason (a range: every failure on those lines)

LOOPS. gcov's counts are totals, not per entry, so "some entry ran two iterations" can
only be concluded by pigeonhole: a loop passes when, in one test and one compiled copy of
it (a function; template instantiations and inlined copies are separate functions or
loops), its body was entered more often than the loop was:
  entries    = the count of the arcs into the loop's header from outside the loop (the
               header: the block its back edges return to; a back edge is an arc whose
               target dominates its source);
  iterations = for a `for`/`while` (a header that holds only the loop's condition line),
               the count of the arcs from the condition into the body; otherwise (`do …
               while`, `for (;;)`: the header runs the body) the header's visits.
If no entry ran two iterations, each contributed at most one, so iterations <= entries;
iterations > entries proves one did. That is the most totals can show, and it is
conservative: a launch whose idle threads enter a thread-strided loop zero times needs
more work than threads before it passes (for `for (i = tid; i < n; i += stride)`: n >
stride, every thread busy, one of them twice). That is why each test runs in a process
of its own: summed over a whole suite, the idle threads of every small launch would
outweigh one test's second iteration.
A loop is named by the line of its header block that holds `for`, `while` or `do` (a
`for`/`while` condition, or a `} while (…);` merged into the header), else the header's
first line (the first statement of a `do` or `for (;;)` body); gcov reports a `for`'s
condition branches on that line.

The reader of .gcno/.gcda is checked against gcov on every run: the lines it finds
executed must be gcov's, file by file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_EXEMPTIONS = os.path.join(ROOT, "kernels", "coverage-exemptions.txt")

TAG_FUNCTION = 0x01000000
TAG_BLOCKS = 0x01410000
TAG_ARCS = 0x01430000
TAG_LINES = 0x01450000
TAG_COUNTER_ARCS = 0x01A10000
ARC_ON_TREE = 1
ARC_FAKE = 2
ENTRY_BLOCK = 0
LOOP_WORDS = re.compile(r"\b(for|while|do)\b")


def kernel_file(path: str) -> str | None:
    """The repository-relative name of a kernel source, or None for anything else (the
    emulator, system and CUDA headers)."""
    rel = os.path.relpath(os.path.normpath(path), ROOT).replace(os.sep, "/")
    if not rel.startswith("kernels/") or rel.startswith("kernels/emu/") or not rel.endswith((".cu", ".cuh")):
        return None
    return rel


def kernel_sources() -> list[str]:
    """Every kernel source the report covers, whether or not the emulated build compiles it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "kernels")):
        dirnames[:] = [d for d in dirnames if kernel_file(os.path.join(dirpath, d, "x.cu"))]
        out.extend(rel for rel in (kernel_file(os.path.join(dirpath, n)) for n in filenames) if rel)
    return sorted(out)


class Sources:
    def __init__(self):
        self.cache: dict[str, list[str]] = {}

    def line(self, path: str, n: int) -> str:
        if path not in self.cache:
            try:
                with open(path if os.path.isabs(path) else os.path.join(ROOT, path), errors="replace") as f:
                    self.cache[path] = f.read().split("\n")
            except OSError:
                self.cache[path] = []
        lines = self.cache[path]
        return lines[n - 1] if 0 < n <= len(lines) else ""


# ---------------------------------------------------------------------------------------
# .gcno / .gcda, gcc 12's format: little-endian 32-bit words, record lengths in bytes,
# strings as a byte length (NUL included) and unpadded bytes, 64-bit counters.


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u32(self) -> int:
        (v,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return v

    def string(self) -> str:
        n = self.u32()
        s = self.data[self.pos : self.pos + n].split(b"\0", 1)[0].decode("utf-8", "replace")
        self.pos += n
        return s

    def more(self) -> bool:
        return self.pos + 8 <= len(self.data)


@dataclass
class Arc:
    src: int
    dst: int
    flags: int


@dataclass
class Function:
    ident: int
    name: str
    nblocks: int = 0
    arcs: list[Arc] = field(default_factory=list)
    lines: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # block -> (file, line)


def read_gcno(path: str) -> list[Function]:
    data = open(path, "rb").read()
    r = Reader(data)
    if r.u32() != 0x67636E6F:
        raise SystemExit(f"{path}: not a .gcno file")
    r.u32()  # version; gcc 12 writes "B22*" (read by gcov below, which rejects a mismatch)
    r.u32()  # stamp
    r.u32()  # checksum
    r.string()  # the compiler's working directory
    r.u32()  # has_unexecuted_blocks
    funcs: list[Function] = []
    while r.more():
        tag, length = r.u32(), r.u32()
        end = r.pos + length
        if tag == TAG_FUNCTION:
            ident = r.u32()
            r.u32(), r.u32()  # lineno and cfg checksums
            funcs.append(Function(ident, r.string()))
        elif tag == TAG_BLOCKS:
            funcs[-1].nblocks = r.u32()
        elif tag == TAG_ARCS:
            src = r.u32()
            while r.pos < end:
                dst, flags = r.u32(), r.u32()
                funcs[-1].arcs.append(Arc(src, dst, flags))
        elif tag == TAG_LINES:
            block, cur = r.u32(), None
            out = funcs[-1].lines.setdefault(block, [])
            while True:
                line = r.u32()
                if line:
                    out.append((cur, line))
                    continue
                name = r.string()
                if not name:
                    break
                cur = name
        r.pos = end
    return funcs


def read_gcda(path: str) -> dict[int, list[int]]:
    """Function ident -> the counts of its instrumented arcs (those off the spanning tree)."""
    if not os.path.exists(path):
        return {}
    r = Reader(open(path, "rb").read())
    if r.u32() != 0x67636461:
        raise SystemExit(f"{path}: not a .gcda file")
    r.u32(), r.u32(), r.u32()  # version, stamp, checksum
    counts: dict[int, list[int]] = {}
    ident = None
    while r.more():
        tag, length = r.u32(), r.u32()
        if length >= 1 << 31:
            # gcc 12 writes a counter record whose counts are all zero as its negated length.
            if tag == TAG_COUNTER_ARCS and ident is not None:
                counts[ident] = [0] * (((1 << 32) - length) // 8)
            continue
        end = r.pos + length
        if tag == TAG_FUNCTION and length:
            ident = r.u32()
        elif tag == TAG_COUNTER_ARCS and ident is not None:
            counts[ident] = [r.u64() for _ in range(length // 8)]
        r.pos = end
    return counts


# ---------------------------------------------------------------------------------------
# Counts of every arc and block as linear combinations of the instrumented counters (what
# gcov's flow solve does with numbers, done once per function with symbols), so each test's
# counts cost a few dot products.

Combo = dict  # counter index -> coefficient


def add(a: Combo, b: Combo, sign: int = 1) -> Combo:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
        if out[k] == 0:
            del out[k]
    return out


def value(c: Combo, counters: list[int]) -> int:
    return sum(v * counters[k] for k, v in c.items())


@dataclass
class LoopShape:
    file: str
    line: int
    entries: Combo
    iterations: Combo


@dataclass
class Graph:
    fn: Function
    blocks: dict[int, Combo]  # block -> its count
    loops: list[LoopShape]


def solve(fn: Function) -> list[Combo] | None:
    arcs: list[Combo | None] = []
    n = 0
    for a in fn.arcs:
        if a.flags & ARC_ON_TREE:
            arcs.append(None)
        else:
            arcs.append({n: 1})
            n += 1
    outs: dict[int, list[int]] = defaultdict(list)
    ins: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(fn.arcs):
        outs[a.src].append(i)
        ins[a.dst].append(i)
    block: dict[int, Combo] = {}
    changed = True
    while changed:
        changed = False
        for b in range(fn.nblocks):
            if b not in block:
                for side in (outs[b], ins[b]):
                    if side and all(arcs[i] is not None for i in side):
                        total: Combo = {}
                        for i in side:
                            total = add(total, arcs[i])
                        block[b] = total
                        changed = True
                        break
            if b in block:
                for side in (outs[b], ins[b]):
                    unknown = [i for i in side if arcs[i] is None]
                    if len(unknown) == 1:
                        rest = block[b]
                        for i in side:
                            if arcs[i] is not None:
                                rest = add(rest, arcs[i], -1)
                        arcs[unknown[0]] = rest
                        changed = True
    return arcs if all(c is not None for c in arcs) else None


def analyse(fn: Function, source_line) -> Graph | None:
    arcs = solve(fn)
    if arcs is None:
        return None
    blocks: dict[int, Combo] = {}
    for a, c in zip(fn.arcs, arcs):
        blocks[a.dst] = add(blocks.get(a.dst, {}), c)
    blocks[ENTRY_BLOCK] = {}
    for a, c in zip(fn.arcs, arcs):
        if a.src == ENTRY_BLOCK:
            blocks[ENTRY_BLOCK] = add(blocks[ENTRY_BLOCK], c)
    return Graph(fn, blocks, list(find_loops(fn, arcs, source_line)))


def find_loops(fn: Function, arcs: list[Combo], source_line):
    succs: dict[int, list[int]] = defaultdict(list)  # block -> arc indices
    preds: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(fn.arcs):
        if not a.flags & ARC_FAKE:  # a call's may-not-return arc to the exit: not a path of the source
            succs[a.src].append(i)
            preds[a.dst].append(i)
    order, seen, stack = [], {ENTRY_BLOCK}, [ENTRY_BLOCK]
    while stack:
        b = stack.pop()
        order.append(b)
        for i in succs[b]:
            if fn.arcs[i].dst not in seen:
                seen.add(fn.arcs[i].dst)
                stack.append(fn.arcs[i].dst)
    dom = {b: set(seen) for b in seen}
    dom[ENTRY_BLOCK] = {ENTRY_BLOCK}
    changed = True
    while changed:
        changed = False
        for b in order[1:]:
            ps = [fn.arcs[i].src for i in preds[b] if fn.arcs[i].src in seen]
            new = (set.intersection(*(dom[p] for p in ps)) if ps else set()) | {b}
            if new != dom[b]:
                dom[b], changed = new, True
    back: dict[int, list[int]] = defaultdict(list)  # header -> back-edge arc indices
    for b in order:
        for i in succs[b]:
            if fn.arcs[i].dst in dom[b]:
                back[fn.arcs[i].dst].append(i)
    for header, edges in back.items():
        tails = {fn.arcs[i].src for i in edges}
        body, work = {header} | tails, [t for t in tails if t != header]
        while work:
            for i in preds[work.pop()]:
                p = fn.arcs[i].src
                if p not in body and p in seen:
                    body.add(p)
                    work.append(p)
        where = loop_line(fn, header, source_line)
        if where is None:
            continue
        entries: Combo = {}
        for i in preds[header]:
            if fn.arcs[i].src not in body:
                entries = add(entries, arcs[i])
        test = condition_blocks(fn, header, body, tails, where)
        iterations: Combo = {}
        if test:
            for b in test:
                for i in succs[b]:
                    if fn.arcs[i].dst in body and fn.arcs[i].dst not in test:
                        iterations = add(iterations, arcs[i])
        else:
            iterations = entries
            for i in edges:
                iterations = add(iterations, arcs[i])
        yield LoopShape(where[0], where[1], entries, iterations)


def loop_line(fn: Function, header: int, source_line) -> tuple[str, int] | None:
    head = [(f, l) for f, l in fn.lines.get(header, []) if f]
    for f, l in head:
        if LOOP_WORDS.search(source_line(f, l)):
            return f, l
    return head[0] if head else None


def condition_blocks(fn: Function, header: int, body: set[int], tails: set[int], where: tuple[str, int]) -> set[int]:
    """The blocks of a loop's condition: the header and what it reaches inside the loop through
    blocks that hold no line of the loop's file but the loop's (`a && b` is two blocks; code
    inlined from another file may sit in a condition). Empty when the header holds other lines
    of the loop's file too: then it runs the body, as in a `do … while`."""
    file, line = where

    def only_condition(b: int) -> bool:
        return all(f != file or l == line for f, l in fn.lines.get(b, []) if f)

    if not only_condition(header):
        return set()
    test, work = {header}, [header]
    while work:
        b = work.pop()
        for a in fn.arcs:
            if a.src == b and not a.flags & ARC_FAKE and a.dst in body and a.dst not in test:
                if a.dst not in tails and fn.lines.get(a.dst) and only_condition(a.dst):
                    test.add(a.dst)
                    work.append(a.dst)
    return test


# ---------------------------------------------------------------------------------------


def run(cmd: list[str], cwd: str | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"coverage: {' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def json_docs(s: str) -> list[dict]:
    docs, dec, i = [], json.JSONDecoder(), 0
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i >= len(s):
            return docs
        doc, i = dec.raw_decode(s, i)
        docs.append(doc)


@dataclass
class Exemption:
    file: str
    lo: int
    hi: int
    reason: str
    where: str
    hides: list[str] = field(default_factory=list)

    def name(self) -> str:
        return f"{self.file}:{self.lo}" + (f"-{self.hi}" if self.hi != self.lo else "")


def read_exemptions(path: str) -> tuple[list[Exemption], list[str]]:
    ex, errors = [], []
    if not os.path.exists(path):
        return ex, errors
    rel = os.path.relpath(path, ROOT)
    for i, raw in enumerate(open(path), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        m = re.match(r"^(kernels/\S+?):(\d+)(?:-(\d+))?(?:\s+(.*))?$", text)
        if not m or not (m.group(4) or "").strip():
            errors.append(f"{rel}:{i}: expected `kernels/FILE:LINE[-LINE]  reason`, got: {text}")
            continue
        lo, hi = int(m.group(2)), int(m.group(3) or m.group(2))
        ex.append(Exemption(m.group(1), lo, hi, m.group(4).strip(), f"{rel}:{i}"))
    return ex, errors


@dataclass
class LoopStats:
    entries: int = 0  # over every run and copy
    iterations: int = 0
    best: tuple[str, int, int] | None = None  # (test, entries, iterations) of a passing copy

    def ok(self) -> bool:
        return self.best is not None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("objdir", help="the emulated build's object directory ($OUT_DIR/emu: the .gcno files)")
    ap.add_argument(
        "runs", nargs="?", help="the runs: RUNS/<n>/*.gcda and RUNS/<n>/name (default: OBJDIR's .gcda, one run)"
    )
    ap.add_argument("--exemptions", default=DEFAULT_EXEMPTIONS)
    ap.add_argument("--gcov", default=os.environ.get("GCOV", "gcov"))
    ap.add_argument("--gcov-tool", default=os.environ.get("GCOV_TOOL", "gcov-tool"))
    ap.add_argument("--no-check", action="store_true", help="report only; exit 0 whatever it finds")
    ap.add_argument("--json", help="write the per-file numbers, every loop and every finding here")
    args = ap.parse_args()

    objdir = os.path.abspath(args.objdir)
    units = sorted(n[: -len(".gcno")] for n in os.listdir(objdir) if n.endswith(".gcno"))
    if not units:
        print(f"coverage: no .gcno in {objdir}: was it built with KILN_EMU_COVERAGE=1?", file=sys.stderr)
        return 2
    if args.runs:
        runs = []
        for d in sorted(os.listdir(args.runs), key=lambda s: (len(s), s)):
            path = os.path.join(args.runs, d)
            if os.path.isdir(path):
                name_file = os.path.join(path, "name")
                name = open(name_file).read().strip() if os.path.exists(name_file) else d
                runs.append((name, path))
    else:
        runs = [("(all)", objdir)]
    if not any(os.path.exists(os.path.join(d, u + ".gcda")) for _, d in runs for u in units):
        print("coverage: no .gcda files: did the tests run on the KILN_EMU_COVERAGE=1 build?", file=sys.stderr)
        return 2

    src = Sources()
    work = tempfile.mkdtemp(prefix="kiln-coverage-")
    try:
        # The runs merged, beside copies of the .gcno files, for gcov.
        merged = os.path.join(work, "merged")
        os.makedirs(merged)
        for u in units:
            shutil.copy(os.path.join(objdir, u + ".gcno"), merged)
        first = True
        for _, d in runs:
            if not any(os.path.exists(os.path.join(d, u + ".gcda")) for u in units):
                continue
            if first:
                for u in units:
                    if os.path.exists(os.path.join(d, u + ".gcda")):
                        shutil.copy(os.path.join(d, u + ".gcda"), merged)
                first = False
            else:
                run([args.gcov_tool, "merge", "-o", merged, merged, d])
        gcov_docs = []
        for u in units:
            if os.path.exists(os.path.join(merged, u + ".gcda")):
                flags = ["--branch-counts", "--branch-probabilities", "--json-format", "--stdout"]
                gcov_docs += json_docs(run([args.gcov, *flags, "--object-directory", merged, u + ".gcda"], cwd=merged))
        merged_counts = {u: read_gcda(os.path.join(merged, u + ".gcda")) for u in units}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The objects name their sources by absolute path: objects compiled from another checkout
    # (a target directory shared between two) would report nothing here.
    named = {os.path.join(d.get("current_working_directory", ""), f["file"]) for d in gcov_docs for f in d["files"]}
    if not any(kernel_file(n) for n in named):
        where = sorted(os.path.dirname(n) for n in named if n.endswith(".cu"))[:1]
        print(f"coverage: the objects were compiled from {where}, not {ROOT}/kernels: rebuild", file=sys.stderr)
        return 2

    # Lines and branches, from gcov.
    lines: dict[str, dict[int, int]] = defaultdict(dict)  # file -> line -> count (max over functions)
    branches: dict[str, dict[tuple[int, str], list[int]]] = defaultdict(dict)
    calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # file -> function -> calls
    for doc in gcov_docs:
        for f in doc.get("files", []):
            rel = kernel_file(os.path.join(doc.get("current_working_directory", ""), f["file"]))
            if not rel:
                continue
            for ln in f["lines"]:
                n = ln["line_number"]
                lines[rel][n] = max(lines[rel].get(n, 0), ln["count"])
                arcs = [b["count"] for b in ln.get("branches", []) if not b.get("throw")]
                if arcs:
                    key = (n, ln.get("function_name", ""))
                    prev = branches[rel].get(key)
                    same = prev is not None and len(prev) == len(arcs)
                    branches[rel][key] = [a + b for a, b in zip(prev, arcs)] if same else arcs
            for fn in f.get("functions", []):
                # A header's function is compiled into every translation unit that uses it.
                calls[rel][fn.get("demangled_name", fn["name"])] += fn["execution_count"]
    never_called = {rel: sorted(n for n, c in fns.items() if c == 0) for rel, fns in sorted(calls.items())}

    # The control-flow graphs: loops, and the reader's own view of the lines (checked against gcov's).
    graphs: dict[str, list[Graph]] = {}
    unsolved = []
    mine: dict[str, dict[int, int]] = defaultdict(dict)
    for u in units:
        graphs[u] = []
        for fn in read_gcno(os.path.join(objdir, u + ".gcno")):
            g = analyse(fn, src.line)
            if g is None:
                unsolved.append(fn.name)
                continue
            graphs[u].append(g)
            counters = merged_counts[u].get(fn.ident)
            for b, places in fn.lines.items():
                c = value(g.blocks.get(b, {}), counters) if counters else 0
                for f, l in places:
                    rel = kernel_file(f) if f else None
                    if rel:
                        mine[rel][l] = max(mine[rel].get(l, 0), c)
    disagree = []
    for rel in sorted(set(lines) | set(mine)):
        a = {n: c > 0 for n, c in lines.get(rel, {}).items()}
        b = {n: c > 0 for n, c in mine.get(rel, {}).items()}
        for n in sorted(set(a) | set(b)):
            if a.get(n) != b.get(n):
                disagree.append(f"{rel}:{n}: gcov says {a.get(n)}, the .gcno/.gcda reader {b.get(n)}")

    loops: dict[tuple[str, int], LoopStats] = {}
    for name, d in runs:
        for u in units:
            counts = read_gcda(os.path.join(d, u + ".gcda"))
            for g in graphs[u]:
                counters = counts.get(g.fn.ident)
                if not counters or not g.loops or not any(counters):
                    continue
                per_key: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
                for lp in g.loops:
                    rel = kernel_file(lp.file)
                    if rel:
                        e, it = value(lp.entries, counters), value(lp.iterations, counters)
                        per_key[(rel, lp.line)][0] += e
                        per_key[(rel, lp.line)][1] += it
                for key, (e, it) in per_key.items():
                    if e == 0:
                        continue
                    st = loops.setdefault(key, LoopStats())
                    st.entries += e
                    st.iterations += it
                    if it > e and (st.best is None or (it - e) > (st.best[2] - st.best[1])):
                        st.best = (name, e, it)

    exemptions, errors = read_exemptions(args.exemptions)

    def exempt(rel: str, n: int, what: str) -> bool:
        for e in exemptions:
            if e.file == rel and e.lo <= n <= e.hi:
                e.hides.append(f"{n}: {what}")
                return True
        return False

    failures, rows, tot = [], [], defaultdict(int)
    for rel in kernel_sources():
        ls = lines.get(rel)
        if not ls:
            rows.append((rel, None))
            continue
        arcs = [c for v in branches[rel].values() for c in v]
        file_loops = sorted((n, st) for (f, n), st in loops.items() if f == rel)
        r = dict(
            lines_hit=sum(1 for c in ls.values() if c > 0),
            lines=len(ls),
            branches_hit=sum(1 for c in arcs if c > 0),
            branches=len(arcs),
            loops_ok=sum(1 for _, st in file_loops if st.ok()),
            loops=len(file_loops),
        )
        rows.append((rel, r))
        for k, v in r.items():
            tot[k] += v
        for n in sorted(ls):
            if ls[n] == 0 and not exempt(rel, n, "never executed"):
                failures.append(f"{rel}:{n}: never executed: {src.line(rel, n).strip()}")
        for n, st in file_loops:
            what = f"loop never ran 2 iterations in one entry (all tests: entered {st.entries}, body {st.iterations})"
            if not st.ok() and not exempt(rel, n, what):
                failures.append(f"{rel}:{n}: {what}: {src.line(rel, n).strip()}")
    stale = []
    for e in exemptions:
        if e.hides:
            continue
        has_code = any(n in lines.get(e.file, {}) for n in range(e.lo, e.hi + 1))
        why = "passes now: remove the exemption" if has_code else "holds no executable kernel line"
        stale.append(f"{e.where}: {e.name()} {why}")

    pct = lambda a, b: f"{100.0 * a / b:5.1f}%" if b else "     -"
    print(f"{'kernel source':34} {'lines':>19} {'branches':>21} {'loops, 2 iterations':>21}")
    for rel, r in rows:
        if r is None:
            print(f"{rel:34} {'(no code in the emulated build)':>40}")
        else:
            print(
                f"{rel:34} {r['lines_hit']:5}/{r['lines']:<5} {pct(r['lines_hit'], r['lines'])} "
                f"{r['branches_hit']:6}/{r['branches']:<6} {pct(r['branches_hit'], r['branches'])} "
                f"{r['loops_ok']:5}/{r['loops']:<5} {pct(r['loops_ok'], r['loops'])}"
            )
    print(
        f"{'total':34} {tot['lines_hit']:5}/{tot['lines']:<5} {pct(tot['lines_hit'], tot['lines'])} "
        f"{tot['branches_hit']:6}/{tot['branches']:<6} {pct(tot['branches_hit'], tot['branches'])} "
        f"{tot['loops_ok']:5}/{tot['loops']:<5} {pct(tot['loops_ok'], tot['loops'])}"
    )
    n_never = sum(len(v) for v in never_called.values())
    print(
        f"{len(runs)} runs; {n_never} compiled functions (template instantiations included) never called; "
        f"{sum(1 for e in exemptions if e.hides)} exemptions in use ({os.path.relpath(args.exemptions, ROOT)})"
    )
    for e in exemptions:
        for h in e.hides:
            print(f"  exempt {e.file}:{h}  ({e.reason})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "files": dict(rows),
                    "failures": failures,
                    "stale_exemptions": stale,
                    "loops": {f"{k[0]}:{k[1]}": vars(v) for k, v in sorted(loops.items())},
                    "never_called": {k: v for k, v in never_called.items() if v},
                },
                f,
                indent=1,
            )
    problems = failures + [f"stale exemption {s}" for s in stale] + errors
    problems += [f"reader/gcov disagreement: {d}" for d in disagree]
    problems += [f"unsolvable arc counts: {n}" for n in unsolved]
    for p in problems:
        print(f"FAIL {p}")
    if problems and not args.no_check:
        print(f"coverage: {len(problems)} failures", file=sys.stderr)
        return 1
    print("coverage: ok" if not problems else f"coverage: {len(problems)} failures (report only: --no-check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
