"""The safe YAML loader: values, line numbers of nested keys and items, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.io.yamlio import MAX_DEPTH, YamlDoc, dotted, load_yaml, read_text

DOC = """\
kind: constitution
name: demo
critique:
  rounds: 2
  principles:
    ids:
      - first
      - second
    tags: [a, b]
comparison:
  exemplars:
    - prompt: p
      answer: A
    -
      prompt: q
      answer: B
when: 2024-01-31
"""


@pytest.fixture
def doc() -> YamlDoc:
    return load_yaml("demo.yaml", DOC)


def one_problem(excinfo: pytest.ExceptionInfo[CaiError]) -> tuple[int | None, str, str]:
    (p,) = excinfo.value.problems
    return p.line, p.field, p.message


def test_values_are_plain_python(doc: YamlDoc) -> None:
    assert doc.data["critique"]["rounds"] == 2
    assert doc.data["critique"]["principles"]["ids"] == ["first", "second"]
    assert doc.data["comparison"]["exemplars"][1] == {"prompt": "q", "answer": "B"}
    # Dates stay text: no field wants a datetime, and a description may well start with one.
    assert doc.data["when"] == "2024-01-31"


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("kind",), 1),
        (("critique",), 3),
        (("critique", "rounds"), 4),
        (("critique", "principles", "ids"), 6),
        (("critique", "principles", "ids", 0), 7),
        (("critique", "principles", "ids", 1), 8),
        (("critique", "principles", "tags", 1), 9),
        (("comparison", "exemplars", 0), 12),
        (("comparison", "exemplars", 0, "answer"), 13),
        (("comparison", "exemplars", 1), 15),  # an item whose content starts on the next line
        (("comparison", "exemplars", 1, "answer"), 16),
    ],
)
def test_line_of_nested_keys_and_items(doc: YamlDoc, loc: tuple, line: int) -> None:
    assert doc.line(loc) == line


def test_line_falls_back_to_nearest_ancestor(doc: YamlDoc) -> None:
    assert doc.line(("critique", "principles", "ids", 7)) == 6
    assert doc.line(("critique", "no-such-key", "deeper")) == 3
    assert doc.line(("nowhere",)) == 1


def test_dotted_names_fields_like_errors_do() -> None:
    assert dotted(("critique", "principles", "ids", 1)) == "critique.principles.ids[1]"
    assert dotted(("exemplars", 0, "rounds", 2, "principle")) == "exemplars[0].rounds[2].principle"
    assert dotted(()) == ""


def test_first_line_offsets_embedded_yaml() -> None:
    doc = load_yaml("t.jinja", "description: d\nvariables:\n  x: text\n", first_line=2)
    assert doc.line(("variables", "x")) == 4
    with pytest.raises(CaiError) as e:
        load_yaml("t.jinja", "a: 1\na: 2\n", first_line=2)
    assert one_problem(e)[0] == 3


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("d.yaml", "outer:\n  inner: 1\n  other: 2\n  inner: 3\n")
    line, field, message = one_problem(e)
    assert (line, field) == (4, "outer.inner")
    assert "first on line 2" in message


def test_duplicate_keys_in_list_items_are_per_item() -> None:
    # The same key in two different items is fine; twice in one item is not.
    load_yaml("ok.yaml", "- {id: a}\n- {id: b}\n")
    with pytest.raises(CaiError) as e:
        load_yaml("d.yaml", "- id: a\n- id: b\n  id: c\n")
    assert one_problem(e)[:2] == (3, "[1].id")


def test_keys_that_collide_after_str_are_duplicates() -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("d.yaml", "1: a\n'1': b\n")
    assert "duplicate key" in one_problem(e)[2]


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/object/apply:os.system ['true']\n",
        "x: !!python/object/new:builtins.dict []\n",
        "x: !!python/name:os.system\n",
        "x: !!python/module:os\n",
        "x: !!python/tuple [1, 2]\n",
        "x: !!binary aGk=\n",
        "x: !!set {a, b}\n",
        "x: !!omap [{a: 1}]\n",
        "x: !custom 1\n",
    ],
)
def test_non_standard_tags_are_refused_before_construction(text: str) -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("t.yaml", text)
    line, field, message = one_problem(e)
    assert (line, field) == (1, "x")
    assert message.startswith("unsupported YAML tag")


def test_standard_explicit_tags_are_fine() -> None:
    doc = load_yaml(
        "t.yaml", "a: !!str 1\nb: !!int '2'\nc: !!float 1\nd: !!bool yes\ne: !!null ''\n"
    )
    assert doc.data == {"a": "1", "b": 2, "c": 1.0, "d": True, "e": None}


def test_alias_bomb_stops_early() -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(CaiError) as e:
        load_yaml("lol.yaml", "\n".join(lines))
    assert "alias bomb" in one_problem(e)[2]


def test_small_aliases_still_work() -> None:
    doc = load_yaml("t.yaml", "base: &b [1, 2]\ncopy: *b\n")
    assert doc.data["copy"] == [1, 2]


def test_merge_keys_are_refused() -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("m.yaml", "base: &b {x: 1}\nchild:\n  <<: *b\n  y: 2\n")
    assert one_problem(e)[0] == 3


def test_recursive_alias_is_an_error_not_a_crash() -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("r.yaml", "a: &a [*a]\n")
    assert "nested too deeply" in one_problem(e)[2]


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_an_error_not_a_crash(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    ok = "x: " + opener * (MAX_DEPTH - 2) + "1" * (opener != "[") + closer * (MAX_DEPTH - 2) + "\n"
    load_yaml("ok.yaml", ok)
    deep = "x: " + opener * 5000 + "1" * (opener != "[") + closer * 5000 + "\n"
    with pytest.raises(CaiError) as e:
        load_yaml("deep.yaml", deep)
    line, _, message = one_problem(e)
    assert line == 1
    assert "nested deeper" in message


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3, "flow sequence that starts on line 2"),
        ("a:\n\t- 1\n", 2, "tab character"),
        ("a: 1\n---\nb: 2\n", 2, "another document"),
        ("a: 'unclosed\n", 2, "quoted scalar that starts on line 1"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("s.yaml", text)
    got_line, _, message = one_problem(e)
    assert got_line == line
    assert message.startswith("YAML syntax error")
    assert needle in message


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n"])
def test_empty_documents(text: str) -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("e.yaml", text)
    assert one_problem(e)[2] == "empty file"


def test_read_text_refuses_binary_and_bad_encodings(tmp_path: Path) -> None:
    (tmp_path / "nul.yaml").write_bytes(b"a: 1\nb: 2\n\x00")
    (tmp_path / "latin.yaml").write_bytes("a: 1\nb: caf\xe9\n".encode("latin-1"))
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfa: 1\n")
    with pytest.raises(CaiError) as e:
        read_text(tmp_path / "nul.yaml")
    assert one_problem(e)[0] == 3
    with pytest.raises(CaiError) as e:
        read_text(tmp_path / "latin.yaml")
    line, _, message = one_problem(e)
    assert line == 2
    assert "0xe9" in message
    assert load_yaml(tmp_path / "bom.yaml").data == {"a": 1}


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(CaiError) as e:
        load_yaml(tmp_path / "nope.yaml")
    assert "cannot read file" in one_problem(e)[2]


def test_problem_text_is_always_one_line() -> None:
    with pytest.raises(CaiError) as e:
        load_yaml("s.yaml", "a: [\n")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("s.yaml:")
