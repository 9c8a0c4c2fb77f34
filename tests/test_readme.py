"""The commands and flags the README and docs/*.md name exist: each is checked against the script's own --help
(a benchmark's flags against its own argparse definitions)."""
from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FLAG = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
# Flags of other programs the README shows in their own commands (pip, pytest, Ray, the hf CLI, Chromium).
OTHER_TOOLS = {"python", "pip", "pytest", "ray", "hf", "huggingface-cli", "bash", "apt-get", "sbatch", "srun"}


def scripts() -> list[str]:
    return sorted(p.name for p in ROOT.glob("0*_*.py")) + ["demo.py"]


@lru_cache(maxsize=None)
def help_flags(script: str) -> frozenset[str]:
    """The option strings the script's --help prints."""
    module = importlib.import_module(Path(script).stem)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0, f"{script} --help failed"
    return frozenset(FLAG.findall(out.getvalue()))


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """Every `python X.py ...` command: in fenced blocks (backslash continuations joined) and inline in the prose."""
    found = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            try:
                words = shlex.split(line)
            except ValueError:  # an apostrophe in prose, not a quote
                words = line.split()
            if len(words) >= 2 and words[0] == "python" and words[1].endswith(".py"):
                found.append(words[1:])
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`(python [^`\n]+)`", prose):  # inline commands in the prose
        words = span.split()
        if words[1].endswith(".py") and "<" not in words[1]:  # not a placeholder such as bench/<name>.py
            found.append(words[1:])
    return found


def sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def step_script(heading: str) -> str | None:
    m = re.search(r"\bStep (\d)\b|\b(0\d)_", heading)
    if not m:
        return None
    number = f"0{m.group(1)}" if m.group(1) else m.group(2)
    return next((s for s in scripts() if s.startswith(number + "_")), None)


TEXT = README.read_text(encoding="utf-8")
DOC_TEXTS = {f"docs/{p.name}": p.read_text(encoding="utf-8") for p in DOCS}
ALL_TEXTS = {"README.md": TEXT, **DOC_TEXTS}
COMMANDS = [(name, words) for name, text in ALL_TEXTS.items() for words in commands(text)]


def bench_flags(script: str) -> frozenset[str]:
    """The option strings a benchmark defines (read from its source: importing it would load torch and more)."""
    source = (ROOT / script).read_text(encoding="utf-8")
    return frozenset(re.findall(r"""add_argument\(\s*["'](--[\w-]+)["']""", source)
                     + re.findall(r"""add_argument\([^)]*?,\s*["'](--[\w-]+)["']""", source))


@pytest.mark.parametrize("where,words", COMMANDS, ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_commands_in_readme_and_docs_use_real_scripts_and_flags(where, words):
    script = words[0]
    assert (ROOT / script).is_file(), f"{where} runs {script}, which does not exist"
    flags = {w.split("=", 1)[0] for w in words[1:] if w.startswith("--")}
    if script in scripts():
        unknown = flags - help_flags(script)
    elif script.startswith("bench/"):
        unknown = flags - bench_flags(script)
    else:
        unknown = set()
    assert not unknown, f"{where} runs {script} with {sorted(unknown)}, which it does not define"


def test_docs_exist_and_every_doc_the_readme_links_is_there():
    assert DOCS, "docs/ holds no .md file"
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", TEXT))
    missing = sorted(p for p in linked if not (ROOT / p).is_file())
    assert not missing, f"README links {missing}, which do not exist"
    unlinked = sorted(name for name in DOC_TEXTS if name not in linked)
    assert not unlinked, f"README does not link {unlinked}"


STEP_SECTIONS = [s for s in sections(TEXT) if step_script(s[0])]


@pytest.mark.parametrize("heading,body", STEP_SECTIONS, ids=[h.lstrip("# ")[:40] for h, _ in STEP_SECTIONS])
def test_readme_option_lists_match_each_steps_help(heading, body):
    script = step_script(heading)
    listed = {m.group(1) for block in code_blocks(body)
              for m in re.finditer(r"^\s*(--[a-zA-Z][\w-]*)", block, flags=re.M)}
    unknown = listed - help_flags(script)
    assert not unknown, f"{heading!r} lists {sorted(unknown)}, which {script} --help does not"


def flags_named_outside_other_tools(text: str) -> set[str]:
    """Flags a text names, less those of other programs' commands (pip, pytest, Ray, hf, benchmarks)."""
    other = set()
    for block in code_blocks(text):
        for line in block.splitlines():
            words = line.split()
            if words and (words[0] in OTHER_TOOLS - {"python"} or (words[:1] == ["python"] and len(words) > 1
                                                                   and not words[1].endswith(".py"))):
                other.update(FLAG.findall(line))
    for span in re.findall(r"`([^`\n]+)`", text):  # inline commands of other programs (`ray start --head`)
        words = span.split()
        if words and words[0] in OTHER_TOOLS - {"python"}:
            other.update(FLAG.findall(span))
    for script_line in re.findall(r"python (bench/\S+\.py[^\n`]*)", text):
        other.update(FLAG.findall(script_line))
    return set(FLAG.findall(text)) - other


@pytest.mark.parametrize("where", sorted(ALL_TEXTS))
def test_every_flag_the_readme_and_docs_name_exists_in_some_step(where):
    known = set().union(*(help_flags(s) for s in scripts()))
    unknown = sorted(f for f in flags_named_outside_other_tools(ALL_TEXTS[where]) if f not in known)
    assert not unknown, f"{where} names flags no step has: {unknown}"


def test_every_step_has_help_text_for_every_flag():
    for script in scripts():
        module = importlib.import_module(Path(script).stem)
        build = getattr(module, "build_parser", None)
        if build is None:
            continue
        missing = [a.option_strings[0] for a in build()._actions if a.option_strings and not a.help]
        assert not missing, f"{script}: flags without help text: {missing}"


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.*)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), flags=re.M)}


@pytest.mark.parametrize("where", sorted(ALL_TEXTS))
def test_links_between_readme_and_docs_lead_to_a_heading(where):
    base = (ROOT / where).parent
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", ALL_TEXTS[where]):
        path = (base / target).resolve() if target else ROOT / where
        if path.suffix == ".md" and (not path.is_file() or anchor not in anchors(path.read_text(encoding="utf-8"))):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{where} links to headings that do not exist: {broken}"


@pytest.mark.parametrize("where", sorted(ALL_TEXTS))
def test_repository_paths_the_readme_and_docs_name_exist(where):
    named = {p.rstrip(".,)") for p in re.findall(r"\b(?:common|web|bench|tests|sample)/[\w./-]+", ALL_TEXTS[where])}
    missing = sorted(p for p in named if "<" not in p and not (ROOT / p).exists())
    assert not missing, f"{where} names {missing}, which this repository does not have"
