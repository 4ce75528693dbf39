"""What `certsync name --powershell` prints is, pasted after `Set-SendConnector -TlsCertificateName`, exactly
the TlsCertificateName, as Windows PowerShell 5.1 reads it: printable ASCII only (5.1 reads a script without a
byte-order mark in the ANSI code page), one argument (a comma must not make an array), `$` and backticks
literal. Read back with the PowerShell grammar (tree-sitter) and an exact evaluator of the few forms allowed:
single-quoted literals, `[char]0xNNNN`, `+`, parentheses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.x509.reports import powershell_argument, powershell_literal
from tests.chains import issue, make_name

POWERSHELL = tree_sitter.Language(tree_sitter_powershell.language())
CERTSYNC = str(Path(sys.executable).with_name("certsync"))
# PowerShell's single quotes: ' and the typographic ones, each of which also closes a '...' literal
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

NASTY = [
    "<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com",
    "<I>CN=Contoso 'Issuing' CA, O=O''Brien & Sons<S>CN=mail.contoso.com",
    "<I>CN=$env:USERNAME, O=$(Remove-Item C:\\ -Recurse)<S>CN=`$x`n`0",
    '<I>CN="quoted", O=a;b<S>CN=x,y',
    "<I>CN=Zürich Grüße, O=Société Générale, C=FR<S>CN=mail.société.fr",
    "<I>CN=\u2018smart\u2019 \u201aquotes\u201b<S>CN=mail",
    "<I>CN=東京 CA, O=株式会社<S>CN=メール.example.jp",
    "<I>CN=Emoji 😀 CA<S>CN=rtl \u202e gnp.exe",
    "<I>CN=tab\there\u00a0nbsp<S>CN=line\nbreak",
    "<I><S>",
    "",
    "'",
    "''",
    "\u2019",
]


def evaluate(argument: str) -> str:
    """The string PowerShell passes for `argument` to `Set-SendConnector -TlsCertificateName`."""
    source = f"Set-SendConnector -Identity 'Outbound to Office 365' -TlsCertificateName {argument}\n"
    root = tree_sitter.Parser(POWERSHELL).parse(source.encode("utf-8")).root_node
    assert not root.has_error, (argument, str(root))
    [command] = _find(root, "command")
    elements = [c for c in command.child_by_field_name("command_elements").children if c.type != "command_argument_sep"]
    names = [e.text.decode() for e in elements]
    assert names[:3] == ["-Identity", "'Outbound to Office 365'", "-TlsCertificateName"], names
    assert len(elements) == 4, names  # one argument
    kind, value = _value(elements[3])
    assert kind == "string", (argument, kind)
    return value


def _find(node: tree_sitter.Node, kind: str) -> list[tree_sitter.Node]:
    found = [node] if node.type == kind else []
    for child in node.children:
        found += _find(child, kind)
    return found


def _value(node: tree_sitter.Node) -> tuple[str, str]:
    children = [c for c in node.children if c.type != "comment"]
    if node.type == "string_literal":
        [chars] = children
        assert chars.type == "verbatim_string_characters", chars.type  # single quotes: nothing expands
        return "string", unquote(chars.text.decode("utf-8"))
    if node.type == "array_literal_expression":
        assert len(children) == 1, node.text  # a comma here would pass an array
    if node.type == "parenthesized_expression":
        assert [children[0].type, children[-1].type] == ["(", ")"]
        return _value(children[1])
    if node.type == "additive_expression" and len(children) > 1:
        left, plus, right = children
        assert plus.type == "+"
        (left_kind, left_value), (_, right_value) = _value(left), _value(right)
        assert left_kind == "string", node.text  # [char] + '...' would convert the string to a char
        return "string", left_value + right_value
    if node.type == "cast_expression":
        type_literal, operand = children
        assert type_literal.text.decode().lower() == "[char]", type_literal.text
        number = operand.text.decode()
        assert [n.type for n in _find(operand, "hexadecimal_integer_literal")] == ["hexadecimal_integer_literal"]
        return "char", chr(int(number, 16))
    assert len(children) == 1, (node.type, node.text)  # the grammar's wrappers around one expression
    return _value(children[0])


def unquote(literal: str) -> str:
    """A PowerShell single-quoted literal's value: inside, two single quotes (any of the five) are one."""
    assert literal[0] in SINGLE_QUOTES and literal[-1] in SINGLE_QUOTES, literal
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        if body[i] in SINGLE_QUOTES:
            assert i + 1 < len(body) and body[i + 1] in SINGLE_QUOTES, literal  # a lone quote ends the literal
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def from_utf16(text: str) -> str:
    """Python text from PowerShell's UTF-16 code units ([char] pairs of surrogates)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


@pytest.mark.parametrize("name", NASTY)
def test_the_powershell_argument_is_printable_ascii_and_reads_back_exactly(name):
    argument = powershell_argument(name)
    assert argument.isascii() and argument.isprintable(), argument
    assert from_utf16(evaluate(argument)) == name


@pytest.mark.parametrize("name", [n for n in NASTY if "\n" not in n])
def test_the_json_single_quoted_literal_reads_back_exactly_too(name):
    assert evaluate(powershell_literal(name)) == name


def test_an_ascii_name_is_one_single_quoted_literal_with_quotes_doubled():
    assert powershell_argument("<I>CN=R11, O=Let's Encrypt<S>CN=$x`") == "'<I>CN=R11, O=Let''s Encrypt<S>CN=$x`'"
    assert powershell_argument("é") == "('' + [char]0x00E9)"
    assert powershell_argument("a😀") == "('a' + [char]0xD83D + [char]0xDE00)"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40))
def test_any_text_round_trips(name):
    assert from_utf16(evaluate(powershell_argument(name))) == name


def test_certsync_name_powershell_prints_the_value_of_a_nasty_certificate(tmp_path):
    subject = make_name("mail.société.fr", "O'Brien $(Get-Date) `n \u2019 东京", "FR")
    path = tmp_path / "nasty.pem"
    path.write_bytes(issue(subject).pem)
    env = {k: v for k, v in os.environ.items() if k != "CERTSYNC_DEBUG"}
    shown = subprocess.run([CERTSYNC, "name", "--powershell", str(path)], capture_output=True, text=True, env=env)
    report = subprocess.run([CERTSYNC, "name", "--json", str(path)], capture_output=True, text=True, env=env)
    assert shown.returncode == report.returncode, shown.stderr  # 1: Exchange would refuse a self-signed one
    [line] = shown.stdout.splitlines()
    assert line.isascii() and line.startswith("(")
    expected = json.loads(report.stdout)["tls_certificate_name"]
    assert "O'Brien $(Get-Date) `n \u2019 东京" in expected
    assert from_utf16(evaluate(line)) == expected


def test_name_powershell_and_json_cannot_be_combined():
    result = subprocess.run(
        [CERTSYNC, "name", "--powershell", "--json", "examples/mail-2026-11.pem"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_the_readme_shows_what_certsync_prints_for_a_non_ascii_name():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    shown = readme.split("PS> certsync name --powershell societe.pem\n", 1)[1].splitlines()[0]
    name = "<I>CN=R3, O=Soci\u00e9t\u00e9 G\u00e9n\u00e9rale<S>CN=mail.example.fr"
    assert shown == powershell_argument(name) and evaluate(shown) == name
    literal = readme.split("PS> certsync name --powershell examples\\mail-2026-11.pem\n", 1)[1].splitlines()[0]
    assert literal == powershell_argument("<I>CN=R11, O=Let's Encrypt, C=US<S>CN=mail.contoso.com")
