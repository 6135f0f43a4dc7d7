"""The written state machine agrees with the code, in both places it is written."""

from __future__ import annotations

import re
from pathlib import Path

from environments.lifecycle import states

ROOT = Path(__file__).resolve().parent.parent


def _moves(pairs) -> dict[str, frozenset[str]]:
    table = {}
    for source, targets in pairs:
        names = [t.strip() for t in targets.split(",")]
        table[source.strip()] = frozenset(n for n in names if n and n != "(final)")
    return table


def _code_moves() -> dict[str, frozenset[str]]:
    return {str(k): frozenset(str(v) for v in vs) for k, vs in states.TRANSITIONS.items()}


def test_it_documents_every_allowed_move_in_architecture_md():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## State machine", 1)[1].split("##", 1)[0]
    rows = re.findall(r"^\| ([a-z_]+) \| ([a-z_, ()]+) \|$", section, re.M)
    assert _moves(rows) == _code_moves()


def test_it_documents_every_allowed_move_in_the_state_module():
    rows = re.findall(r"^ {4}([a-z_]+) +-> ([a-z_, ()]+)$", states.__doc__ or "", re.M)
    assert _moves(rows) == _code_moves()
