"""README.md and docs/ stay true: every command example parses, and the cheap ones run.

Examples are read from the fenced code blocks: lines that call `digitnet` (or
`.venv/bin/digitnet`), `$ digitnet ...` lines followed by their output, and usage synopses
(`digitnet CMD [--option ...]`). Every option they name must exist; every option of every
command must be named on its page, docs/<command>.md. The cheap examples (help, listing,
predicting, scoring and reporting a tiny run, printing a config, a dry run, a refused config) run
for real in a sandbox folder that holds the names they use (runs/latest, photo.jpg, drawings/,
configs/ ...), with $DIGITNET_DATA_DIR at 6,000 synthetic training images.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitnet.cli import cli
from digitnet.data import load_mnist
from tests.conftest import REPO, synthetic_digits, write_idx_dir

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Commands that are cheap on a tiny run; `train` examples run only when they are cheap too.
CHEAP_COMMANDS = {"runs", "predict", "evaluate", "report"}
CHEAP_FLAGS = {"--help", "-h", "--version", "--print-config", "--dry-run"}


@dataclass
class Example:
    """One command line from the docs, with the output shown under it (`$` examples only)."""

    page: str
    text: str  # the shell line, `.venv/bin/` dropped
    argv: list[str]  # the arguments after `digitnet`
    output: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}: {self.text}"


def digitnet_argv(line: str) -> list[str] | None:
    """The arguments of the `digitnet` call in a shell line (after any pipe), or None."""
    for segment in line.split("|"):
        if segment.strip().split(" ")[0] in ("digitnet", ".venv/bin/digitnet"):
            return shlex.split(segment, comments=True)[1:]
    return None


def read_blocks() -> list[tuple[str, str]]:
    """(page name, code block text) for every fenced block of README.md and docs/*.md."""
    return [(str(page.relative_to(REPO)), block) for page in PAGES
            for block in FENCE.findall(page.read_text())]


def is_synopsis(block: str) -> bool:
    return block.startswith("digitnet ") and " [" in block.splitlines()[0]


def examples() -> list[Example]:
    """Every command example in the docs, in page order."""
    found: list[Example] = []
    for page, block in read_blocks():
        if is_synopsis(block):
            continue
        current = None
        for line in block.splitlines():
            prompt = line.startswith("$ ")
            text = line[2:] if prompt else line.strip()
            argv = digitnet_argv(text) if (prompt or not current) else None
            if argv is None and current is not None and not prompt:
                current.output.append(line)
                continue
            current = None
            if argv is not None:
                example = Example(page, text.replace(".venv/bin/digitnet", "digitnet"), argv)
                found.append(example)
                current = example if prompt else None
    return found


def synopses() -> list[tuple[str, str]]:
    return [(page, block) for page, block in read_blocks() if is_synopsis(block)]


def option_names(command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)
            if name.startswith("-")}


def command_of(argv: list[str]):
    """The Click command an argv names (the group itself for `digitnet --version`)."""
    if argv and argv[0] in cli.commands:
        return cli.commands[argv[0]], argv[1:]
    return cli, argv


EXAMPLES = examples()


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 10 and len(synopses()) >= len(cli.commands)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_every_example_names_real_options(example):
    command, args = command_of(example.argv)
    assert command is not cli or not args or args[0].startswith("-"), \
        f"{example.id}: no command {args[0]!r}"
    known = option_names(command) | {"-h", "--help"}
    for word in args:
        if word.startswith("-") and word != "-":
            assert word.split("=")[0] in known, f"{example.id}: {word} is not an option"


@pytest.mark.parametrize("page, block", synopses(), ids=lambda value: str(value)[:40])
def test_every_synopsis_names_real_options(page, block):
    name = block.split()[1]
    assert name in cli.commands, f"{page}: synopsis of an unknown command {name!r}"
    known = option_names(cli.commands[name])
    for option in re.findall(r"(?<![\w-])--?[a-z][a-z-]*", block):
        assert option in known, f"{page}: {option} is not an option of digitnet {name}"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_and_option_is_documented(name):
    page = REPO / "docs" / f"{name}.md"
    assert page.is_file(), f"digitnet {name} has no reference page docs/{name}.md"
    text = page.read_text()
    for option in sorted(option_names(cli.commands[name]) - {"-h", "--help"}):
        assert option in text, f"docs/{name}.md does not mention {option}"
    readme = (REPO / "README.md").read_text()
    assert f"`digitnet {name}`" in readme and f"(docs/{name}.md)" in readme


def test_every_link_between_pages_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def is_cheap(example: Example) -> bool:
    command = example.argv[0] if example.argv else ""
    return (bool(CHEAP_FLAGS.intersection(example.argv)) or command in CHEAP_COMMANDS
            or any(line.startswith("Error:") for line in example.output))


CHEAP = {example.text: example for example in EXAMPLES if is_cheap(example)}


def write_digit(path: Path) -> None:
    """A dark digit on white paper, the way a user's scan looks."""
    images, _ = synthetic_digits(10, seed=5)
    Image.fromarray(255 - np.kron(images[3], np.ones((4, 4), np.uint8))).save(path)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_run) -> Path:
    """A working folder holding every name the cheap examples use, with a tiny finished run."""
    root = tmp_path_factory.mktemp("docs-sandbox")
    shutil.copytree(tiny_run, root / "runs" / "20250101-120000", symlinks=True)
    for link in ("latest", "cnn"):
        (root / "runs" / link).symlink_to("20250101-120000")
    shutil.copytree(REPO / "configs", root / "configs")
    write_idx_dir(root / "mnist", train=6000, test=100)  # enough for the default split
    # The run stands for one trained on this data: a report scores only the run's own test set.
    manifest = root / "runs" / "20250101-120000" / "manifest.json"
    recorded = json.loads(manifest.read_text())
    recorded["data_files"] = load_mnist(str(root / "mnist")).files
    manifest.write_text(json.dumps(recorded))
    for folder in ("drawings", "scans"):
        (root / folder).mkdir()
        write_digit(root / folder / "one.png")
    for name in ("photo.jpg", "digit.png", "my-digit.png"):
        write_digit(root / name)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "digitnet").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m digitnet "$@"\n')
    (bin_dir / "digitnet").chmod(0o755)
    return root


def expected_line(documented: str, actual: str) -> bool:
    """Whether `actual` is the documented line, where `...` in the docs stands for any text."""
    head, elided, tail = documented.partition("...")
    if not elided:
        return actual == documented
    return actual.startswith(head) and actual.endswith(tail)


@pytest.mark.parametrize("example", list(CHEAP.values()), ids=lambda e: e.id)
def test_cheap_examples_run(example, sandbox):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("DIGITNET_")}  # the sandbox's runs/, never a download
    env["DIGITNET_DATA_DIR"] = str(sandbox / "mnist")
    env["PATH"] = f"{sandbox / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", example.text], cwd=sandbox,
                            env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in example.output if line.startswith("Error:")]
    if errors:
        assert result.returncode == 1, result.stderr
        assert expected_line(errors[0], result.stderr.splitlines()[0]), result.stderr
    else:
        assert result.returncode == 0, f"{example.text}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr


def test_every_named_module_and_function_exists():
    import importlib.util

    for page in PAGES:
        for name in re.findall(r"`(digitnet(?:\.\w+)+)`", page.read_text()):
            module, _, attribute = name.rpartition(".")
            try:
                found = hasattr(importlib.import_module(module), attribute)
            except ImportError:
                found = False
            found = found or importlib.util.find_spec(name) is not None  # a module itself
            assert found, f"{page.name}: `{name}` does not exist"
