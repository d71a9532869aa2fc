"""Bounded templates: every way a template can build a huge value is refused while rendering,
by `cai validate`'s dry-render and by the renderer, with one line and within a memory bound."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from cai.constitution.validate import validate_paths
from cai.errors import CaiError
from cai.templates import budget
from cai.templates.renderer import PromptRenderer

# Peak Python allocation (tracemalloc) allowed while one payload is validated or rendered,
# compile included: the per-render allowance (16 MiB) plus the transient of the one operation
# that is refused after it ran (a fixed-factor filter such as `tojson` on a full-size value).
MEMORY_BOUND = 40 * 2**20
HEADER = "{#- cai\ndescription: hostile\nvariables: {}\n-#}\n"
BODY_LINE = 5  # the header takes lines 1-4


def _chain(build: str, times: int = 4) -> str:
    """`'x' * 1000`, then `build` applied to the previous value `times` times (10× each)."""
    body = "{% set v0 = 'x' * 1000 %}"
    for i in range(1, times + 1):
        body += "{% set v" + str(i) + " = " + build.replace("P", f"v{i - 1}") + " %}"
    return body + "{{ v" + str(times) + " | length }}"


TEN = ", ".join(["P"] * 10)
PAYLOADS = {
    # The issue's payloads: chained join, `~`, `%` formatting.
    "chained_join": _chain(f"[{TEN}] | join"),
    "chained_tilde": _chain(" ~ ".join(["P"] * 10)),
    "chained_percent": _chain("'" + "%s" * 10 + f"' % ({TEN},)"),
    "percent_mapping": "{% set a = 'x' * 200000 %}{{ '" + "%(a)s" * 10 + "' % {'a': a} }}",
    "chained_plus": _chain(" + ".join(["P"] * 10)),
    "str_format": _chain("'" + "{}" * 10 + f"'.format({TEN})"),
    "str_format_reused": "{% set a = 'x' * 200000 %}{{ '" + "{0}" * 10 + "'.format(a) }}",
    "str_join_method": _chain(f"''.join([{TEN}])"),
    # Filters that grow text.
    "filter_indent_width": "{% set a = 'x\\n' * 100000 %}{{ a | indent(100000) }}",
    "filter_indent_string": "{% set a = 'x\\n' * 100000 %}{{ a | indent(a) }}",
    "filter_wordwrap": "{% set a = 'x ' * 100000 %}{{ a | wordwrap(1, wrapstring=a) }}",
    "filter_replace": "{% set a = 'x' * 100000 %}{{ a | replace('', a) }}",
    "filter_truncate_end": "{% set a = 'x' * 100000 %}{{ a | truncate(5, end=[a] * 100) }}",
    "filter_string": "{% set a = 'x' * 100000 %}{{ ([a] * 100000) | string }}",
    "filter_wordcount": "{% set a = 'x' * 100000 %}{{ ([a] * 100000) | wordcount }}",
    "filter_tojson_indent": "{% set l = [[[1]]] * 100000 %}{{ l | tojson(100000) }}",
    "filter_tojson_escapes": "{% set a = '<' * 200000 %}{{ [a, a, a, a, a] | join | tojson }}",
    "filter_urlencode": "{% set a = 'x' * 100000 %}{{ ([('k', a)] * 1000) | urlencode }}",
    "filter_batch_join": "{% set a = 'x' * 100000 %}{{ [a] | batch(100000, a) | list | join }}",
    "filter_block": "{% set a = 'x' * 100000 %}{% filter upper %}{% for i in a %}{{ a }}{% endfor %}{% endfilter %}",
    # Methods that grow text.
    "method_replace": "{% set a = 'x' * 100000 %}{{ a.replace('x', a) }}",
    "method_expandtabs": "{% set a = '\\t' * 100000 %}{{ a.expandtabs(100000) }}",
    "method_translate": "{% set a = 'x' * 100000 %}{{ a.translate({120: a}) }}",
    # Lists: multiplication and concatenation, then printed or joined.
    "list_multiply_print": "{% set a = 'x' * 100000 %}{{ [a] * 100000 }}",
    "list_multiply_join": "{% set a = 'x' * 100000 %}{{ ([a] * 100000) | join }}",
    "list_concat_join": "{% set a = 'x' * 100000 %}{% set l = [a] * 100000 %}{{ (l + l + l) | join }}",
    "nested_list_print": "{% set a = 'x' * 1000 %}{{ [[a] * 1000] * 1000 }}",
    "dict_print": "{% set a = 'x' * 100000 %}{{ {a: [a] * 100} }}",
    # Loops that build: the output, a `{% set %}` block, distinct values kept alive.
    "loop_output": "{% set a = 'x' * 100000 %}{% for i in a %}{{ a }}{% endfor %}",
    "loop_set_block": "{% set a = 'x' * 100000 %}{% set b %}{% for i in a %}{{ a }}{% endfor %}{% endset %}{{ b }}",
    "loop_distinct_values": "{% set a = 'x' * 100000 %}{% set b %}{% for i in a %}{{ a ~ i }}{% endfor %}{% endset %}",
    "many_live_values": "{% set a = 'x' * 190000 %}"
    + "".join("{% set b" + str(i) + " = a ~ " + str(i) + " %}" for i in range(200)),
    "macro_output": "{% set a = 'x' * 200000 %}{% macro m() %}{{ a }}{{ a }}{{ a }}{% endmacro %}{{ m() ~ m() }}",
    # Constants only: nothing is folded at compile time, outside the budget.
    "constant_filters": "{{ " + " ~ ".join(["('x' | center(200000))"] * 6) + " }}",
}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "t.jinja"
    path.write_text(HEADER + body)
    return path


def _peak(run) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", PAYLOADS)
def test_validate_refuses_each_payload_within_the_memory_bound(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, PAYLOADS[name])
    (count, problems), peak = _peak(lambda: validate_paths([path]))
    assert count == 1
    (problem,) = problems
    assert (Path(problem.path).name, problem.line, problem.field) == ("t.jinja", BODY_LINE, "template")
    assert "too large" in problem.message, str(problem)
    assert "\n" not in str(problem)
    assert peak < MEMORY_BOUND, f"{name}: {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", PAYLOADS)
def test_rendering_refuses_each_payload_within_the_memory_bound(tmp_path: Path, name: str) -> None:
    _write(tmp_path, PAYLOADS[name])
    renderer = PromptRenderer([tmp_path])

    def render() -> CaiError:
        with pytest.raises(CaiError) as e:
            renderer.render("t")
        return e.value

    error, peak = _peak(render)
    assert str(error).startswith(f"{tmp_path / 't.jinja'}:{BODY_LINE}: template: ")
    assert "too large" in str(error)
    assert peak < MEMORY_BOUND, f"{name}: {peak / 2**20:.1f} MiB"


def test_the_error_names_the_line_that_passes_the_cap(tmp_path: Path) -> None:
    body = "{% set a = 'x' * 100000 %}\nfirst\n{% for i in a %}\n{{ a }}\n{% endfor %}\n"
    _write(tmp_path, body)
    with pytest.raises(CaiError, match=r"t\.jinja:8: template: rendered text too large: more than 1,000,000"):
        PromptRenderer([tmp_path]).render("t")


def test_the_rendered_prompt_is_capped_at_the_module_constant(tmp_path: Path) -> None:
    body = "{% set a = 'x' * 100000 %}{% for i in 'x' * n %}{{ a }}{% endfor %}"
    (tmp_path / "t.jinja").write_text(HEADER.replace("{}", "{n: number}") + body)
    renderer = PromptRenderer([tmp_path])
    n = budget.MAX_PROMPT_CHARS // 100000
    assert len(renderer.render("t", n=n)) == budget.MAX_PROMPT_CHARS
    with pytest.raises(CaiError, match="rendered text too large"):
        renderer.render("t", n=n + 1)


def test_large_but_legal_templates_still_render(tmp_path: Path) -> None:
    """Real inputs are big: long conversations printed, trimmed, indented, as JSON, joined."""
    body = (
        "{% for m in conversation %}{{ m.role }}:\n{{ m.content | trim | indent(2) }}\n{% endfor %}"
        "{{ conversation | tojson | length }} {{ conversation | length }}"
        " {{ [response, response] | join(' / ') | length }}"
        " {{ ('%s|%s' % (response, response)) | length }} {{ (response ~ response).upper() | length }}"
    )
    (tmp_path / "t.jinja").write_text(HEADER.replace("{}", "{conversation: messages, response: text}") + body)
    content = "Line one of a long message.\n" * 4000  # 112,000 characters, with newlines
    conversation = [{"role": "user", "content": content}, {"role": "assistant", "content": content}]
    out = PromptRenderer([tmp_path]).render("t", conversation=conversation, response="r" * 200000)
    assert out.startswith("user:\nLine one")
    assert out.endswith(" 2 400003 400001 400000")


def test_the_allowance_is_per_render(tmp_path: Path) -> None:
    """Each render may build close to its allowance; renders do not add up."""
    body = "{% set a = 'x' * 190000 %}" + "".join("{% set b" + str(i) + " = a ~ " + str(i) + " %}" for i in range(60))
    _write(tmp_path, body + "ok")
    renderer = PromptRenderer([tmp_path])
    for _ in range(3):
        assert renderer.render("t") == "ok"
    assert budget._ALLOWANCE.get() is None


def test_printing_a_large_container_is_measured_not_refused(tmp_path: Path) -> None:
    (tmp_path / "t.jinja").write_text(HEADER.replace("{}", "{c: messages}") + "{{ c }}")
    c = [{"role": "user", "content": "a\nb" * 50000}]
    assert PromptRenderer([tmp_path]).render("t", c=c) == str(c)


@pytest.mark.parametrize(
    "value",
    [
        "short 'q' \\ \n",
        "x" * 1000,
        "it's \\ " * 300,
        "both ' and \" quotes " * 300,
        "a\nb\tc\r" * 300,
        "\x00\x01" * 300,
        "é😀\u200b\U000e0001" * 300,
        ["a" * 300, ("b" * 300, 1, 2.5, None, True, 2**4000)],
        {"k" * 300: ["v" * 300], 3: {"x": "\n" * 300}, "s": {1, 2}, "f": frozenset({"z" * 300})},
        {"a": 1}.items(),
    ],
)
def test_measured_sizes_are_upper_bounds(value) -> None:
    assert budget.text_size(value) >= len(str(value))
    assert budget.shape(value).chars >= len(repr(value))


def test_a_constitution_with_a_payload_template_is_refused_by_validate_and_by_critique(tmp_path: Path) -> None:
    """The issue's case: one critique run with such a template wrote a 300 MB records.jsonl."""
    from tests.helpers import invoke

    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "critique.jinja").write_text(
        "{#- cai\ndescription: d\nvariables: {critique_request: text}\n-#}\n"
        + PAYLOADS["chained_join"].replace("{{ v4 | length }}", "{{ critique_request }}{{ v4 }}")
    )
    constitution = tmp_path / "c.yaml"
    constitution.write_text(
        "kind: constitution\nname: c\nversion: 1\nlibraries: [harmlessness, comparison]\ntemplate_dirs: [tpl]\n"
    )
    r = invoke("validate", str(constitution))
    assert r.code == 2
    assert f"critique.jinja:{BODY_LINE}: template: value too large" in r.stdout + r.stderr
    out = tmp_path / "out"
    r = invoke(
        "critique",
        "-c",
        str(constitution),
        "--model",
        "fake",
        "--prompts",
        "red-team",
        "--limit",
        "2",
        "--out",
        str(out),
        "--quiet",
    )
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.code == 2 and len(lines) == 1 and "too large" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    assert written < 1_000_000


def test_filters_without_a_useful_bound_are_gone() -> None:
    from cai.templates import sandbox

    env = sandbox.make_env([])
    assert "pprint" not in env.filters and "urlize" not in env.filters
    assert not env.optimized  # nothing a template computes runs at compile time, outside the budget
