"""The refusal tables' harness: one bad input, refused by name, with every stored file left byte-for-byte as it was.

A case is a ``tradeforge`` command line with the settings and files it runs with. ``check_refused`` writes the
files into a working folder that already holds stored content (whatever the table's fixture put there: a lake, a
state database, an MLflow store), runs the command in process from that folder, and asserts that it

* exits non-zero,
* prints nothing on stdout (given ``--json``, a command prints its error document there instead),
* prints exactly one non-empty line on stderr, holding every fragment the case names (the input and the problem),
* prints no traceback, and
* leaves every file under the working folder byte-identical (files the case itself wrote included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import lake_fingerprint
from tests.tradeforge_cli.cli_helpers import cli, squash


@dataclass(frozen=True)
class Refusal:
    """One bad input. ``args`` are ``tradeforge``'s arguments (``{work}`` is replaced by the working folder);
    ``names`` are the fragments the error must hold; ``env`` the settings it runs with; ``files`` the files written
    (relative to the working folder) before it runs."""

    id: str
    args: tuple[str, ...]
    names: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    json_error: bool = False

    def param(self) -> object:
        return pytest.param(self, id=self.id)


def _expand(text: str, work: Path) -> str:
    return text.replace("{work}", str(work))


def check_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``case`` in ``work`` and assert it is refused cleanly, with nothing stored changed."""
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_expand(content, work))
    for key, value in case.env.items():
        monkeypatch.setenv(key, _expand(value, work))
    monkeypatch.chdir(work)
    before = lake_fingerprint(work)

    result = cli(*(_expand(arg, work) for arg in case.args))

    assert result.exit_code != 0, f"{case.id}: accepted\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"{case.id}: crashed: {result.exception!r}"
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{case.id}: expected one line on stderr, got:\n{result.stderr}"
    for fragment in case.names:
        assert squash(fragment).lower() in squash(lines[0]).lower(), (
            f"{case.id}: {fragment!r} not named in: {lines[0]}")
    if case.json_error or "--json" in case.args:
        document = json.loads(result.stdout)
        assert document.get("error"), f"{case.id}: no error in the JSON document: {result.stdout}"
    else:
        assert result.stdout == "", f"{case.id}: printed on stdout: {result.stdout}"
    after = lake_fingerprint(work)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{case.id}: stored files changed: {changed}"
