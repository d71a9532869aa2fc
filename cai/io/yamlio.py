"""Safe YAML loading that keeps line numbers and rejects what plain `safe_load` lets through.

We compose the node graph with PyYAML's safe loader and build Python values ourselves so that
we can (1) reject duplicate keys, (2) remember the line of every key and item, (3) refuse any
non-standard tag such as ``!!python/object`` before anything is constructed, and (4) stop alias
expansion bombs by counting constructed nodes. Duplicate keys are collected (every one is
reported, so `cai validate` lists them all); anything unsafe stops at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cai.errors import CaiError, Problem, fail
from cai.io.readers import check_regular_file

MAX_FILE_BYTES = 5_000_000
MAX_NODES = 200_000
MAX_DEPTH = 64

Loc = tuple[str | int, ...]

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
# Unquoted dates would otherwise become `datetime.date`; no field wants one, so keep the text.
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


@dataclass
class YamlDoc:
    """Parsed data plus the line of every mapping key and list item, by location tuple."""

    path: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        """The line of `loc`, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def read_text(path: str | Path) -> str:
    """Read a data file as UTF-8 text, refusing binary, huge or mis-encoded files."""
    p = Path(path)
    if p.exists():  # a FIFO or /dev/zero is refused unread (a missing file: the error below)
        check_regular_file(p, max_bytes=MAX_FILE_BYTES)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise fail(str(p), None, "", f"cannot read file: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise fail(str(p), None, "", f"file is larger than {MAX_FILE_BYTES} bytes")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise fail(str(p), line, "", "binary file (NUL byte); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise fail(str(p), line, "", f"not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None


# What YAML does not allow in a document (PyYAML's own rule): C0 controls other than tab and line
# ends, DEL, C1 controls other than NEL, surrogates, U+FFFE and U+FFFF.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def non_printable(text: str) -> tuple[int, int, str] | None:
    """(line, column, "U+XXXX") of the first character YAML refuses, or None."""
    m = _NON_PRINTABLE.search(text)
    if m is None:
        return None
    before = text[: m.start()]
    line = before.count("\n") + 1
    return line, m.start() - (before.rfind("\n") + 1) + 1, f"U+{ord(m.group()):04X}"


class _Loader(yaml.SafeLoader):
    """The safe loader with a nesting limit, so deep documents fail with a line, not a crash."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Builder:
    def __init__(self, path: str, loader: yaml.SafeLoader, first_line: int = 1):
        self.path = path
        self.first_line = first_line
        self.loader = loader
        self.lines: dict[Loc, int] = {}
        self.count = 0
        self.duplicates: list[Problem] = []

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        line = node.start_mark.line + self.first_line
        if self.count > MAX_NODES:
            raise fail(self.path, line, _dotted(loc), "document expands to too many nodes (alias bomb?)")
        if len(loc) > 2 * MAX_DEPTH:  # only a self-referencing alias gets here (`&a [*a]`)
            raise fail(self.path, line, _dotted(loc[:8]), "nested too deeply (recursive alias?)")
        self.lines.setdefault(loc, line)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise fail(self.path, line, _dotted(loc), f"unsupported YAML tag {node.tag!r}")
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise fail(
                        self.path,
                        key_node.start_mark.line + self.first_line,
                        _dotted(loc),
                        "YAML merge keys ('<<') are not supported; write the keys out",
                    )
                key = self.build(key_node, (*loc, "<key>"))
                if not isinstance(key, str | int | float | bool) or key is None:
                    raise fail(
                        self.path,
                        key_node.start_mark.line + self.first_line,
                        _dotted(loc),
                        "mapping keys must be plain scalars",
                    )
                key = str(key)
                if key in out:
                    self.duplicates.append(
                        Problem(
                            self.path,
                            key_node.start_mark.line + self.first_line,
                            _dotted((*loc, key)),
                            f"duplicate key (first on line {self.lines[(*loc, key)]})",
                        )
                    )
                    continue
                self.lines[(*loc, key)] = key_node.start_mark.line + self.first_line
                out[key] = self.build(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise fail(self.path, line, _dotted(loc), f"unsupported YAML tag {node.tag!r}")
            items = []
            for i, item in enumerate(node.value):
                self.lines[(*loc, i)] = item.start_mark.line + self.first_line
                items.append(self.build(item, (*loc, i)))
            return items
        return self._scalar(node, line, loc)

    def _scalar(self, node: yaml.Node, line: int, loc: Loc) -> Any:
        if node.tag == _TIMESTAMP_TAG:
            return str(node.value)
        if node.tag not in _SCALAR_TAGS:
            raise fail(self.path, line, _dotted(loc), f"unsupported YAML tag {node.tag!r}")
        try:
            value = self.loader.construct_object(node, deep=True)
        except ValueError:  # an integer of thousands of digits: Python refuses to convert it
            raise fail(self.path, line, _dotted(loc), "a number too long to read (more than 4300 digits)") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(self.path, line, _dotted(loc), f"{node.value} is not a finite number")
        return value


def _dotted(loc: Loc) -> str:
    parts: list[str] = []
    for p in loc:
        if p == "<key>":
            continue
        parts.append(f"[{p}]" if isinstance(p, int) else ("." + p if parts else p))
    return "".join(parts)


def dotted(loc: Loc) -> str:
    """`("a", 0, "b")` → ``a[0].b`` — how fields are named in error messages."""
    return _dotted(loc)


def load_yaml(path: str | Path, text: str | None = None, first_line: int = 1) -> YamlDoc:
    """Load one YAML document from `path` (or from `text`, naming `path` in errors).

    `first_line` is the file line that `text` starts on, for YAML embedded in another file.
    """
    p = str(path)
    if text is None:
        text = read_text(path)
    if not text.strip():
        raise fail(p, first_line, "", "empty file")
    odd = non_printable(text)
    if odd is not None:
        line, column, code = odd
        raise fail(
            p, line + first_line - 1, "", f"control character {code} at column {column}; YAML text cannot hold it"
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + first_line if mark else None
        what = (e.problem or "syntax error").strip()
        if "\\t" in what or "'\\t'" in str(e):
            what = "tab character; indent YAML with spaces"
        elif e.context and e.context_mark and mark and e.context_mark.line != mark.line:
            what += f" ({e.context.strip()} that starts on line {e.context_mark.line + first_line})"
        raise fail(p, line, "", f"YAML syntax error: {what}") from None
    except yaml.YAMLError as e:
        raise fail(p, None, "", f"YAML error: {e}") from None
    finally:
        loader.dispose()
    if node is None:
        raise fail(p, first_line, "", "empty file")
    builder = _Builder(p, loader, first_line)
    data = builder.build(node, ())
    if builder.duplicates:
        raise CaiError(builder.duplicates)
    return YamlDoc(p, data, builder.lines)
