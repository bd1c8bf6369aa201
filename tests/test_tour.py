"""The guided tour (docs/tour/, docs/tour/pt-BR/) stays true to the code and to itself.

Checked without running anything but the parser:
  * both languages have exactly the chapters of CHAPTERS (and README.md), and each chapter has the same
    headings structure in both (the same number of headings, level by level);
  * every code link, written as [`gptkit/file.py::Name.method`](../../gptkit/file.py), names a file that
    exists and a function or class that its source defines (read with ast, nothing imported), and its
    target is that file; every other relative markdown link points to an existing file;
  * every `gptkit ...` command in a fenced code block names an existing sub-command and only options
    that command has (the click command built from gptkit.cli's typer app).

The negative tests at the bottom feed the same checkers broken text, so that they are seen to fail.
"""

from __future__ import annotations

import ast
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest
import typer.main

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "docs" / "tour"
LANGUAGES = {"en": TOUR, "pt-BR": TOUR / "pt-BR"}
CHAPTERS = [
    "01-tokenization.md",
    "02-embeddings.md",
    "03-attention.md",
    "04-transformer-block.md",
    "05-forward-pass.md",
    "06-backward-pass.md",
    "07-optimization.md",
    "08-regularization.md",
    "09-data-preparation.md",
    "10-training-loop.md",
    "11-hyperparameters.md",
    "12-monitoring.md",
    "13-generation.md",
    "14-fine-tuning.md",
    "15-inference-optimization.md",
    "16-deployment.md",
]
PAGES = ["README.md", *CHAPTERS]

CODE_LINK = re.compile(r"\[`(gptkit/[\w/]+\.py)::([\w.]+)`\]\(([^)\s]+)\)")
MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


# --- the checkers ------------------------------------------------------------------------------------


def headings(text: str) -> list[int]:
    """The level of every markdown heading outside code blocks, in order."""
    outside = FENCE.sub("", text)
    return [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) \S", outside, re.M)]


@lru_cache(maxsize=None)
def defined_names(path: Path) -> frozenset[str]:
    """Every function and class a module defines, as dotted names: `GPT`, `GPT.forward`, `Rotary.build_tables`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                names.add(name)
                visit(child, name + ".")

    visit(tree, "")
    return frozenset(names)


def link_problems(text: str, page: Path) -> list[str]:
    """Broken code links and broken relative file links of one page (empty when all is well)."""
    problems = []
    for file, name, target in CODE_LINK.findall(text):
        source = ROOT / file
        if not source.is_file():
            problems.append(f"{file}::{name}: no such file")
            continue
        if name not in defined_names(source):
            problems.append(f"{file}::{name}: {file} defines no function or class {name}")
        if (page.parent / target).resolve() != source.resolve():
            problems.append(f"{file}::{name}: the link points to {target}, not to {file}")
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            problems.append(f"link to {target}: no such file")
    return problems


@lru_cache(maxsize=1)
def cli():
    """The root click group of `gptkit` (typer may carry its own copy of click: no isinstance checks below)."""
    from gptkit.cli import app

    return typer.main.get_command(app)


def _is_group(command) -> bool:
    return hasattr(command, "list_commands")


def _option_names(command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def command_lines(text: str) -> list[str]:
    """Every `gptkit ...` command in the page's fenced code blocks (also after a pipe, && or ;)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a shell comment
            for part in re.split(r"\|\||&&|[|;]", line):
                part = part.strip().removeprefix("$ ")
                if part.startswith("gptkit ") or part == "gptkit":
                    found.append(part)
    return found


def command_problems(line: str, root=None) -> list[str]:
    """What is wrong with one `gptkit ...` command line: an unknown sub-command, or unknown options."""
    root = root or cli()
    words = shlex.split(line)[1:]
    command = root
    path = ["gptkit"]
    while _is_group(command) and words and not words[0].startswith("-"):
        sub = command.get_command(None, words[0])
        if sub is None:
            return [f"`{line}`: `{' '.join(path)}` has no sub-command {words[0]!r}"]
        command, path = sub, path + [words.pop(0)]
    if _is_group(command) and not any(w in ("--help", "-h") for w in words):
        return [f"`{line}`: `{' '.join(path)}` needs a sub-command"]
    known = _option_names(command)
    problems = []
    for word in words:
        if word.startswith("-") and word != "-" and not re.match(r"-\d", word):
            name = word.split("=", 1)[0]
            if name not in known:
                problems.append(f"`{line}`: `{' '.join(path)}` has no option {name}")
    return problems


def tour_problems(tour: Path) -> list[str]:
    """Everything wrong with a tour folder (docs/tour, or a copy of it): chapters, headings, links, commands."""
    problems = []
    folders = {"en": tour, "pt-BR": tour / "pt-BR"}
    for language, folder in folders.items():
        present = sorted(p.name for p in folder.glob("*.md")) if folder.is_dir() else []
        for missing in sorted(set(PAGES) - set(present)):
            problems.append(f"{language}: {missing} is missing")
        for extra in sorted(set(present) - set(PAGES)):
            problems.append(f"{language}: {extra} is not a chapter of the tour")
    for page in PAGES:
        en, pt = folders["en"] / page, folders["pt-BR"] / page
        if en.is_file() and pt.is_file():
            a, b = headings(en.read_text(encoding="utf-8")), headings(pt.read_text(encoding="utf-8"))
            if a != b:
                problems.append(f"{page}: headings differ: en {a} vs pt-BR {b}")
        for path in (en, pt):
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                problems += [f"{path.relative_to(tour)}: {p}" for p in link_problems(text, path)]
                problems += [f"{path.relative_to(tour)}: {p}" for line in command_lines(text) for p in command_problems(line)]
    return problems


# --- the tour itself ---------------------------------------------------------------------------------


def test_the_tour_is_whole_and_true():
    assert tour_problems(TOUR) == []


@pytest.mark.parametrize("page", CHAPTERS)
def test_every_chapter_links_code_and_ends_with_a_measured_experiment(page):
    for language, folder in LANGUAGES.items():
        text = (folder / page).read_text(encoding="utf-8")
        assert CODE_LINK.search(text), f"{language}/{page} links no code"
        assert command_lines(text), f"{language}/{page} has no gptkit command to run"
        measured = text.split("\n## ")[-1]  # the last section: what the experiment gave
        assert re.search(r"\d[.,]\d", measured) and "{{" not in text, f"{language}/{page}: no measured result"
    en_links = CODE_LINK.findall((TOUR / page).read_text(encoding="utf-8"))
    pt_links = CODE_LINK.findall((TOUR / "pt-BR" / page).read_text(encoding="utf-8"))
    assert [(f, n) for f, n, _ in en_links] == [(f, n) for f, n, _ in pt_links]
    en_commands = command_lines((TOUR / page).read_text(encoding="utf-8"))
    pt_commands = command_lines((TOUR / "pt-BR" / page).read_text(encoding="utf-8"))
    assert en_commands == pt_commands, f"{page}: the commands differ between the languages"


# --- the checkers catch what they must ---------------------------------------------------------------


def test_a_broken_code_link_is_caught():
    page = TOUR / "05-forward-pass.md"
    good = "[`gptkit/model.py::GPT.forward`](../../gptkit/model.py)"
    assert link_problems(good, page) == []
    assert link_problems("[`gptkit/model.py::GPT.fly`](../../gptkit/model.py)", page)  # no such method
    assert link_problems("[`gptkit/nowhere.py::GPT`](../../gptkit/nowhere.py)", page)  # no such file
    assert link_problems("[`gptkit/model.py::GPT`](../../gptkit/train.py)", page)  # points elsewhere
    assert link_problems("[the docs](../missing.md)", page)  # a plain link to no file
    assert link_problems("[site](https://example.com) [up](#in-plain-words)", page) == []


def test_a_renamed_option_or_command_is_caught():
    assert command_problems("gptkit train --max-iters 200 --lr 3e-3 --out out/a") == []
    assert command_problems("gptkit prepare shakespeare --tokenizer bpe:1024 --out data/x") == []
    assert command_problems("gptkit train --max-iterations 200")  # renamed option
    assert command_problems("gptkit prepare shakspeare")  # misspelt sub-command
    assert command_problems("gptkit tokenize")  # a group alone
    assert command_problems("gptkit export --ckpt out/ckpt.safetensors --format hf --out x --dtyp float16")
    lines = command_lines("```\necho hi | gptkit sample --nope 1  # comment --nope2\n```\n")
    assert lines == ["gptkit sample --nope 1"]
    assert command_problems(lines[0])


def test_a_missing_chapter_or_a_drifted_translation_is_caught(tmp_path):
    import shutil

    copy = tmp_path / "docs" / "tour"
    shutil.copytree(TOUR, copy)
    # The copy sits elsewhere, so its relative links would break: check only chapters and headings.
    def structural(problems: list[str]) -> list[str]:
        return [p for p in problems if "missing" in p or "headings differ" in p or "not a chapter" in p]

    assert structural(tour_problems(copy)) == []
    (copy / "pt-BR" / "07-optimization.md").unlink()
    (copy / "pt-BR" / "12-monitoring.md").write_text("# Monitoramento\n", encoding="utf-8")
    problems = structural(tour_problems(copy))
    assert any("pt-BR: 07-optimization.md is missing" in p for p in problems)
    assert any("12-monitoring.md: headings differ" in p for p in problems)
