"""PromptRenderer: folders and overrides, declared variables, the sandbox, limits, hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.paths import data_dir
from cai.templates import sandbox
from cai.templates.renderer import PromptRenderer, dry_render, placeholder

SHIPPED = ["comparison", "comparison_cot", "critique", "revision"]


def template(path: Path, body: str, variables: str = "{x: text}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{{#- cai\ndescription: test\nvariables: {variables}\n-#}}\n{body}")
    return path


def render(tmp_path: Path, body: str, variables: str = "{x: text}", **values) -> str:
    template(tmp_path / "t.jinja", body, variables)
    return PromptRenderer([tmp_path]).render("t", **values)


def test_shipped_templates_exist_and_dry_render_clean() -> None:
    r = PromptRenderer()
    assert set(SHIPPED) <= set(r.names())
    for name in SHIPPED:
        assert dry_render(r.path_of(name)) == []


def test_user_folder_overrides_a_shipped_template(tmp_path: Path) -> None:
    template(
        tmp_path / "critique.jinja", "MINE: {{ critique_request }}", "{critique_request: text}"
    )
    mine, shipped = PromptRenderer([tmp_path]), PromptRenderer()
    assert mine.path_of("critique") == (tmp_path / "critique.jinja").resolve()
    assert mine.render("critique", critique_request="Be kind.") == "MINE: Be kind."
    assert not shipped.render("critique", critique_request="Be kind.").startswith("MINE")
    assert mine.info("critique").sha256 != shipped.info("critique").sha256
    # The other shipped templates are still there.
    assert mine.path_of("revision") == shipped.path_of("revision")


def test_user_folder_adds_templates_and_first_folder_wins(tmp_path: Path) -> None:
    template(tmp_path / "a" / "extra.jinja", "A {{ x }}")
    template(tmp_path / "b" / "extra.jinja", "B {{ x }}")
    r = PromptRenderer([tmp_path / "a", tmp_path / "b"])
    assert "extra" in r.names()
    assert r.render("extra", x="1") == "A 1"


def test_unknown_template_suggests_a_name() -> None:
    with pytest.raises(CaiError) as e:
        PromptRenderer().info("critiqe")
    assert e.value.problems[0].hint == "critique"


def test_render_wants_exactly_the_declared_variables(tmp_path: Path) -> None:
    template(tmp_path / "t.jinja", "{{ x }} {{ y }}", "{x: text, y: text}")
    r = PromptRenderer([tmp_path])
    assert r.render("t", x="1", y="2") == "1 2"
    with pytest.raises(CaiError, match="no value given for y"):
        r.render("t", x="1")
    with pytest.raises(CaiError, match="does not declare z"):
        r.render("t", x="1", y="2", z="3")


def test_header_variable_forms_and_types(tmp_path: Path) -> None:
    template(tmp_path / "l.jinja", "{{ a }}{{ b }}", "[a, b]")
    template(
        tmp_path / "m.jinja",
        "{% for m in c %}{{ m.role }}{% endfor %}{{ n }}{{ items|join }}",
        "{c: messages, n: number, items: list}",
    )
    r = PromptRenderer([tmp_path])
    assert r.info("l").variables == {"a": "text", "b": "text"}
    assert r.info("m").variables == {"c": "messages", "n": "number", "items": "list"}
    assert dry_render(tmp_path / "m.jinja") == []
    assert placeholder("c", "messages")[0]["role"] == "user"


def test_values_are_data_not_templates(tmp_path: Path) -> None:
    """Jinja in a principle's text or a user's prompt is printed, never evaluated."""
    out = render(tmp_path, "{{ x }}", x="{{ 7 * 7 }} {% raw %}{{ ''.__class__ }}")
    assert out == "{{ 7 * 7 }} {% raw %}{{ ''.__class__ }}"


def test_strict_undefined(tmp_path: Path) -> None:
    with pytest.raises(CaiError, match="no attribute 'nope'") as e:
        render(tmp_path, "line5\n{{ x.nope }}", x="v")
    assert e.value.problems[0].line == 6


def test_no_globals_and_no_unsafe_filters() -> None:
    env = sandbox.make_env([])
    assert env.globals == {}
    for name in ("attr", "format", "map", "select", "selectattr", "groupby", "random", "xmlattr"):
        assert name not in env.filters


def test_ordinary_template_features_still_work(tmp_path: Path) -> None:
    body = (
        "{% for m in c %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}"
        "|{{ 2 ** 10 }}|{{ '%-4s' % x }}|{{ '{:>4}'.format(x) }}|{{ x|center(5) }}|{{ x * 3 }}"
        "|{{ x|upper|replace('A', 'b') }}|{% if n > 1 %}many{% endif %}"
    )
    out = render(
        tmp_path,
        body,
        "{c: messages, x: text, n: number}",
        c=[{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}],
        x="a",
        n=2,
    )
    assert out == "1/2,2/2|1024|a   |   a|  a  |aaa|b|many"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("{{ x.__class__ }}", "unsafe"),
        ("{{ x['__class__'] }}", "unsafe"),
        ("{% set s = x %}{{ s.__init__.__globals__ }}", "unsafe"),
        ("{{ x.upper.__self__.__class__ }}", "unsafe"),
        ("{{ x|center(10**8) }}", "numeric argument"),
        ("{{ [x]|random }}", "No filter named 'random'"),
        ("{{ '{0.__class__}'.format(x) }}", "unsafe"),
        ("{{ x * 10**9 }}", "sequence repetition"),
        ("{{ 2 ** 100 }}", "exponent too large"),
        ("{{ ((2**64)**64)**64 }}", "number too large"),
        ("{{ x.rjust(10**8) }}", "numeric argument"),
        ("{{ x|indent(10**8) }}", "numeric argument"),
        ("{{ '%*s' % (10**8, x) }}", "numeric argument"),
        ("{{ '{:{}}'.format(x, 10**8) }}", "numeric argument"),
    ],
)
def test_sandbox_refuses(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(CaiError, match=needle) as e:
        render(tmp_path, body, x="v")
    (p,) = e.value.problems
    assert (Path(p.path).name, p.line) == ("t.jinja", 5)


def test_render_time_is_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.2)
    with pytest.raises(CaiError, match=r"took longer than 0\.2s"):
        render(
            tmp_path,
            "{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}",
            x="v" * 2000,
        )
    # The deadline belongs to one render only.
    assert sandbox._DEADLINE.get() is None
    assert render(tmp_path, "{% for a in x %}{{ a }}{% endfor %}", x="ok") == "ok"


def test_template_hash_is_the_file_content(tmp_path: Path) -> None:
    path = template(tmp_path / "t.jinja", "{{ x }}")
    assert (
        PromptRenderer([tmp_path]).info("t").sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    path.write_text(path.read_text() + " ")
    assert (
        PromptRenderer([tmp_path]).info("t").sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    )


def test_data_dir_points_at_shipped_prompts() -> None:
    assert {p.stem for p in data_dir("prompts").glob("*.jinja")} >= set(SHIPPED)
