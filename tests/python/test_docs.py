"""The code blocks of README.md and docs/*.md. Every ```python block runs here (exec, on the emulated
library like the other tests); one whose first line is ``# needs: torch`` or ``# needs: cuda`` is
skipped, saying why, where torch is not importable or there is no CUDA device (and libkiln.so), and
runs where there is. Every ```c block is a fragment of examples/c/kiln_example.c, which
test_shared.py builds and runs. Rust blocks are doctests (src/doc_pages.rs, `cargo test --doc`);
sh blocks are not run, but the scripts they call must exist. Relative links must resolve."""
import importlib
import os
import re
from collections import namedtuple

import pytest

from conftest import ROOT, cuda_library

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGS = {"rust", "rust,no_run", "sh", "bash", "c", "text", "python"}
NEEDS = {"torch", "cuda"}
EXAMPLE = ROOT / "examples/c/kiln_example.c"

Block = namedtuple("Block", "page line lang code")


def blocks(lang=None):
    """The fenced blocks of every page (of one language when given), with the fence's line."""
    found = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("```"):
                end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
                found.append(Block(page.relative_to(ROOT), i + 1, lines[i][3:].strip(), "\n".join(lines[i + 1:end])))
                i = end + 1
            else:
                i += 1
    return [b for b in found if lang is None or b.lang == lang]


def block_id(b):
    return f"{b.page}:{b.line}"


def needs(block):
    """The needs a block declares on its first line (``# needs: torch, cuda``)."""
    first = block.code.split("\n", 1)[0]
    m = re.match(r"#\s*needs:\s*(.*)$", first)
    return [n.strip() for n in m.group(1).split(",")] if m else []


def unmet(need):
    """Why `need` is absent here, or None when it is met."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return f"needs {need}: torch is not installed"
    if need == "cuda":
        if not torch.cuda.is_available():
            return "needs cuda: no CUDA device (torch.cuda.is_available() is False)"
        if cuda_library() is None or not cuda_library().is_file():
            return "needs cuda: libkiln.so not built (cargo build --features cuda)"
    return None


def load_cuda_library():
    """kiln looks for libkiln.so beside KILN_LIBRARY; scripts/test.sh names the one its cargo
    build made in KILN_CUDA_LIBRARY, so load that one once (kiln keeps it for the process)."""
    import kiln._lib

    saved = os.environ.get("KILN_LIBRARY")
    os.environ["KILN_LIBRARY"] = str(cuda_library())
    try:
        kiln._lib.library("cuda")
    finally:
        if saved is None:
            del os.environ["KILN_LIBRARY"]
        else:
            os.environ["KILN_LIBRARY"] = saved


def test_pages_have_blocks_of_every_kind():
    assert {p.name for p in PAGES} >= {"README.md", "activation.md", "glu.md", "padding.md", "norm.md", "attention.md",
                                       "equivariant.md", "emulator.md", "gpu.md", "python.md", "c.md",
                                       "performance.md", "layout.md"}
    assert len(blocks("python")) >= 8 and len(blocks("c")) >= 3 and len(blocks("rust")) >= 8


@pytest.mark.parametrize("block", blocks(), ids=block_id)
def test_every_block_names_its_language(block):
    # rustdoc runs a block without a language as Rust: every other block must say what it is.
    assert block.lang in LANGS, f"{block_id(block)}: fence language {block.lang!r}, expected one of {sorted(LANGS)}"


def test_pages_with_rust_blocks_are_doctests():
    doc_pages = (ROOT / "src/doc_pages.rs").read_text()
    for page in sorted({b.page for b in blocks() if b.lang.startswith("rust")}):
        include = f'include_str!("../{page.as_posix()}")'
        assert include in doc_pages, f"{page} has Rust blocks but src/doc_pages.rs does not include it"


@pytest.mark.parametrize("block", blocks("python"), ids=block_id)
def test_python_block_compiles(block):
    compile(block.code, block_id(block), "exec")


@pytest.mark.parametrize("block", blocks("python"), ids=block_id)
def test_python_block_runs(block):
    wanted = needs(block)
    unknown = set(wanted) - NEEDS
    assert not unknown, f"{block_id(block)}: unknown need(s) {sorted(unknown)}; known: {sorted(NEEDS)}"
    for need in wanted:
        reason = unmet(need)
        if reason:
            pytest.skip(reason)
    if "cuda" in wanted:
        load_cuda_library()
    exec(compile(block.code, block_id(block), "exec"), {"__name__": "__docs__"})


def code_lines(text):
    """The lines of C code, stripped, without blank and comment-only lines."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith(("/*", "*", "//")):
            out.append(s)
    return out


@pytest.mark.parametrize("block", blocks("c"), ids=block_id)
def test_c_block_is_a_fragment_of_the_example(block):
    first = block.code.split("\n", 1)[0]
    assert "fragment of examples/c/kiln_example.c" in first, (
        f"{block_id(block)}: a C block is a fragment of examples/c/kiln_example.c and says so on its first line "
        "(a whole program is the example itself, referenced)"
    )
    example = code_lines(EXAMPLE.read_text())
    at = 0
    for line in code_lines(block.code):
        assert line in example[at:], f"{block_id(block)}: {line!r} is not in {EXAMPLE.name} (in this order)"
        at = example.index(line, at) + 1


@pytest.mark.parametrize("block", [b for b in blocks() if b.lang in ("sh", "bash")], ids=block_id)
def test_shell_blocks_call_scripts_that_exist(block):
    for script in re.findall(r"(?<![\w/.])(scripts/[\w./-]+|examples/[\w./-]+)", block.code):
        assert (ROOT / script).exists(), f"{block_id(block)}: {script} does not exist"


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link {target} points at a missing {dest}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: link {target}: no heading #{anchor} in {dest.name}"
