"""`cai validate` on hostile and broken inputs, through the real CLI entry point (in-process).

Every case must: exit 2; print one line per problem that names the file and line
(`path:LINE: ...`); print no traceback and nothing that looks like leaked Python objects; stay
within a fixed amount of memory; and execute nothing — payloads try to `touch` a marker file that
must not exist afterwards.

Each case is its own test, run in its own folder (generated cases also from inside it, so a
relative `touch pwned` would land there too) under pytest-timeout, so a hang fails the case
instead of stalling the suite. No assertion reads a clock: a hostile template may be stopped by
the time budget or by the size budget, whichever comes first on this machine under this load,
and each budget is tested alone with the other one lifted. A few static fixtures that repeat a
kind of error already covered are checked only through one run of `cai validate` over the whole
fixture folder.
"""

from __future__ import annotations

import contextlib
import re
import tracemalloc
from dataclasses import dataclass, field, replace
from pathlib import Path

import jinja2
import pytest
import yaml

from cai.templates import budget, sandbox
from tests.helpers import Result, invoke

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "malformed"
MARKER = "@MARKER@"  # replaced by the absolute path of the case's marker file
# A guard against hangs only (pytest-timeout), far above any case's run time on a slow, loaded
# machine: a render is stopped by its own time budget long before.
HANG_GUARD_S = 120
# Python memory a case may allocate at its peak (tracemalloc): a render's size budget is 16 MiB.
PEAK_BYTES = 96 * 2**20
SUMMARY_RE = re.compile(r"^\d+ problem\(s\) in \d+ file\(s\)$")
PROBLEM_RE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<text>.+)$")
# What leaked Python internals look like when a payload gets further than it should.
LEAK_SIGNS = (
    "<class ",
    "<module ",
    "<function ",
    "<built-in ",
    "<bound method",
    "__builtins__': ",
    "'__name__': ",
)

# A needle is a substring of the message, or a tuple of substrings of which one must be there.
Needle = str | tuple[str, ...]
Expect = tuple[str, int, tuple[Needle, ...]]  # (file relative to the case folder, line, needles)
# Which budget stops a template that is both slow and large depends on the machine and its load.
TIME_BUDGET = "took longer than"
SIZE_BUDGET = "builds more than"
EITHER_BUDGET = (TIME_BUDGET, SIZE_BUDGET)


@dataclass(frozen=True)
class Case:
    id: str
    target: str
    expect: tuple[Expect, ...]
    files: dict[str, str | bytes] | None = field(default=None, hash=False)  # None: a static fixture
    solo: bool = True  # False: checked only in the whole-folder run

    def folder(self, root: Path) -> Path:
        return root / self.id if self.files is not None else FIXTURES


def static(target: str, line: int, *needles: Needle, file: str | None = None, solo: bool = True) -> Case:
    case_id = target.replace("/", "-").rsplit(".", 1)[0]
    return Case(case_id, target, ((file or target, line, needles),), solo=solo)


# ------------------------------------------------------------------ static fixtures (checked in)

STATIC = [
    # YAML syntax
    static("yaml_unclosed_flow.yaml", 8, "YAML syntax error", "starts on line 7"),
    static("yaml_bad_indent.yaml", 6, "YAML syntax error"),
    static(
        "yaml_unclosed_quote.yaml",
        7,
        "YAML syntax error",
        "quoted scalar that starts on line 5",
        solo=False,
    ),
    static("yaml_two_documents.yaml", 3, "YAML syntax error", "another document"),
    static("yaml_tab_indent.yaml", 4, "tab character"),
    # duplicate keys, empty files, YAML features we refuse
    static("yaml_duplicate_top_key.yaml", 4, "version", "duplicate key (first on line 2)"),
    static(
        "yaml_duplicate_nested_key.yaml",
        10,
        "principles[1].critique",
        "duplicate key (first on line 8)",
    ),
    static("yaml_empty.yaml", 1, "empty file"),
    static("yaml_whitespace_only.yaml", 1, "empty file"),
    static("yaml_alias_bomb.yaml", 3, "too many nodes (alias bomb?)"),
    static("yaml_recursive_alias.yaml", 3, "nested too deeply"),
    static("yaml_merge_key.yaml", 6, "merge keys"),
    static("yaml_top_level_list.yaml", 1, "expected a mapping"),
    static("yaml_custom_tag.yaml", 2, "version", "unsupported YAML tag", "binary"),
    # schema: unknown keys, wrong types, missing fields, kinds
    static("schema_unknown_key_critque.yaml", 5, "critque: unknown key", "(did you mean 'critique'?)"),
    static(
        "schema_unknown_nested_key.yaml",
        7,
        "principles[0].tagz: unknown key",
        "(did you mean 'tags'?)",
    ),
    static(
        "schema_unknown_key_in_section.yaml",
        8,
        "critique.sampling.replacement: unknown key",
        "(did you mean 'replace'?)",
    ),
    static("schema_rounds_string.yaml", 6, "critique.rounds", "valid integer"),
    static("schema_rounds_too_many.yaml", 6, "critique.rounds", "less than or equal to 16", solo=False),
    static("schema_tags_string.yaml", 7, "principles[0].tags", "valid list"),
    static("schema_version_negative.yaml", 2, "version", "greater than or equal to 1"),
    static("schema_version_float.yaml", 3, "version", "valid integer", solo=False),
    static("schema_missing_revision.yaml", 7, "principles[1].revision", "missing required field"),
    static("schema_missing_name.yaml", 1, "name", "missing required field"),
    static("schema_empty_principles.yaml", 3, "principles", "at least 1 item", solo=False),
    static("schema_bad_id.yaml", 7, "principles[1].id", "lowercase"),
    static(
        "schema_unknown_kind.yaml",
        1,
        "kind",
        "unknown kind 'constitutoin'",
        "(did you mean 'constitution'?)",
    ),
    static("schema_missing_kind.yaml", 1, "kind", "missing"),
    static("schema_kind_not_string.yaml", 1, "kind", "unknown kind"),
    static("schema_answer_not_ab.yaml", 7, "exemplars[0].answer", "'A' or 'B'", solo=False),
    # principle ids, tags, templates, libraries
    static("lib_duplicate_ids.yaml", 10, "principles[2].id", "duplicate principle id 'harmful'"),
    static(
        "con_unknown_principle_id.yaml",
        6,
        "unknown principle id 'harmful-contnet'",
        "(did you mean 'harmful-content'?)",
    ),
    static(
        "con_unknown_comparison_id.yaml",
        6,
        "comparison.principles.ids",
        "'no-such-question'",
        solo=False,
    ),
    static("con_unknown_tag.yaml", 6, "no principle has tag 'harmfull'", "(did you mean 'harmful'?)"),
    static(
        "con_unknown_template.yaml",
        7,
        "templates.revision",
        "unknown template 'revison'",
        "(did you mean 'revision'?)",
    ),
    static("con_unknown_library.yaml", 6, "libraries[1]", "(did you mean 'comparison'?)"),
    static("con_no_comparison_library.yaml", 4, "no comparison-principles library", solo=False),
    static(
        "con_library_is_constitution.yaml",
        4,
        "libraries[1]",
        "harmless.yaml",
        "expected a principle library",
    ),
    static(
        "dup_across_libraries/constitution.yaml",
        6,
        "libraries[1]",
        "'harmful' in lib_two.yaml",
        "also in lib_one.yaml",
    ),
    # includes
    static("con_include_missing.yaml", 4, "include", "no-such-parent.yaml", "no such file"),
    static(
        "con_self_include.yaml",
        5,
        "include cycle",
        "con_self_include.yaml -> con_self_include.yaml",
    ),
    static("include_cycle/first.yaml", 4, "include cycle", "first.yaml -> second.yaml -> first.yaml"),
    static(
        "include_cycle/second.yaml",
        5,
        "include cycle",
        "second.yaml -> first.yaml -> second.yaml",
        solo=False,
    ),
    static(
        "include_bad_parent/child.yaml",
        6,
        "critique.sampling.replace",
        "valid boolean",
        file="include_bad_parent/parent.yaml",
    ),
    # exemplars
    static(
        "con_exemplar_unknown_principle.yaml",
        10,
        "critique.exemplars[0].rounds[0].principle",
        "'illegal-activities'",
        "(did you mean 'illegal-activity'?)",
    ),
    static("con_template_dir_missing.yaml", 7, "template_dirs[1]", "no such folder"),
    static("con_exemplars_file_missing.yaml", 6, "comparison.exemplars_file", "no such file"),
    static(
        "exemplars_file_bad/constitution.yaml",
        11,
        "exemplars[1].principle",
        "unknown comparison principle 'less-mean'",
        file="exemplars_file_bad/exemplars.yaml",
    ),
    # templates
    static("tpl_missing_header.jinja", 1, "header"),
    static("tpl_syntax_error.jinja", 7, "syntax error", "endif"),
    static("tpl_bad_expression.jinja", 7, "syntax error", solo=False),
    static("tpl_undeclared_variable.jinja", 7, "undeclared variable 'principle_id'"),
    static(
        "tpl_unknown_variable_type.jinja",
        5,
        "header.variables.history",
        "unknown type 'mesages'",
        "(did you mean 'messages'?)",
    ),
    static("tpl_header_unknown_key.jinja", 4, "header.varaibles", "(did you mean 'variables'?)"),
    static("tpl_header_bad_yaml.jinja", 4, "YAML syntax error", "starts on line 3"),
    static("tpl_header_no_variables.jinja", 2, "header.variables", solo=False),
    static("tpl_include.jinja", 6, "include/extends/import are not allowed"),
    static("tpl_extends.jinja", 5, "include/extends/import are not allowed"),
    static("tpl_import.jinja", 6, "include/extends/import are not allowed"),
    static("tpl_unknown_filter.jinja", 7, "No filter named 'shout'"),
    static("tpl_undefined_attribute.jinja", 6, "undefined", "'speaker'"),
    static("tpl_division_by_zero.jinja", 5, "ZeroDivisionError"),
]

# ---------------------------------------------------- generated cases (bytes, marker payloads)

GENERATED: list[Case] = []


def gen(
    case_id: str,
    content: str | bytes,
    line: int,
    *needles: Needle,
    name: str = "input.yaml",
    extra: dict[str, str | bytes] | None = None,
    file: str | None = None,
) -> None:
    files = {name: content, **(extra or {})}
    GENERATED.append(Case(case_id, name, ((file or name, line, needles),), files))


LIB_HEAD = "kind: critique-principles\nversion: 1\n"
gen("bytes_binary_nul", b"kind: critique-principles\nversion: 1\n\x00\x01\x02\xff", 3, "binary file")
gen(
    "bytes_latin1",
    "kind: critique-principles\nversion: 1\ndescription: caf\xe9\n".encode("latin-1"),
    3,
    "not valid UTF-8",
)
gen(
    "bytes_binary_template",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    3,
    "binary file",
    name="image.jinja",
)
gen(
    "yaml_deep_nesting",
    LIB_HEAD + "principles: " + "[" * 3000 + "]" * 3000 + "\n",
    3,
    "nested deeper",
)

# YAML tags that construct Python objects. Each would run `touch MARKER` under yaml.unsafe_load.
TOUCH = f"touch {MARKER}"
gen(
    "yaml_python_object_apply",
    LIB_HEAD + f"description: !!python/object/apply:os.system ['{TOUCH}']\n",
    3,
    "description",
    "unsupported YAML tag",
    "python/object/apply:os.system",
)
gen(
    "yaml_python_object_new",
    LIB_HEAD + f"description: !!python/object/new:os.system ['{TOUCH}']\n",
    3,
    "unsupported YAML tag",
    "python/object/new",
)
gen(
    "yaml_python_name",
    LIB_HEAD + "description: !!python/name:os.system\n",
    3,
    "python/name:os.system",
)
gen(
    "yaml_python_tag_on_key",
    f"kind: constitution\n? !!python/object/apply:os.system ['{TOUCH}']\n: 1\n",
    2,
    "unsupported YAML tag",
)
gen(
    "yaml_python_tag_on_document",
    f"!!python/object/apply:os.system\nargs: ['{TOUCH}']\n",
    1,
    "unsupported YAML tag",
)
gen(
    "yaml_python_tag_directive",
    f"%TAG !py! tag:yaml.org,2002:python/object/apply:\n---\nkind: !py!os.system ['{TOUCH}']\n",
    3,
    "kind",
    "unsupported YAML tag",
)
gen(
    "yaml_python_tag_behind_alias",
    LIB_HEAD + f"x: &cmd !!python/object/apply:os.system ['{TOUCH}']\ndescription: *cmd\n",
    3,
    "unsupported YAML tag",
)
gen(
    "yaml_python_tag_in_exemplar_file",
    "kind: constitution\nname: c\nversion: 1\nlibraries: [harmlessness, comparison]\n"
    "critique:\n  exemplars_file: exemplars.yaml\n",
    4,
    "unsupported YAML tag",
    name="constitution.yaml",
    file="exemplars.yaml",
    extra={
        "exemplars.yaml": "kind: critique-exemplars\nexemplars:\n  - prompt: p\n"
        f"    response: !!python/object/apply:os.system ['{TOUCH}']\n"
    },
)
gen(
    "yaml_python_tag_in_template_header",
    f"{{#- cai\ndescription: d\nvariables: {{x: !!python/object/apply:os.system ['{TOUCH}']}}\n-#}}\n{{{{ x }}}}\n",
    3,
    "unsupported YAML tag",
    name="header.jinja",
)

# Jinja sandbox escapes. The header declares `x` (text) and `conversation` (messages); the payload
# is on line 5. Payloads that could run a command try to `touch` the marker.
HEADER = "{#- cai\ndescription: hostile template\nvariables: {x: text, conversation: messages}\n-#}\n"


def jinja(case_id: str, payload: str, *needles: Needle) -> None:
    gen(case_id, HEADER + payload, 5, *needles, name="hostile.jinja")


def jinja_cmd(case_id: str, payload: str, *needles: str) -> None:
    """`payload` holds CMD where a shell command goes; it becomes `touch MARKER`."""
    gen(case_id, HEADER + payload.replace("CMD", TOUCH), 5, *needles, name="hostile.jinja")


# Classic SSTI: walk from a string to object.__subclasses__() and on to os.
jinja_cmd(
    "jinja_subclasses_walk",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
    "{{ c()._module.__builtins__['__import__']('os').system('CMD') }}{% endif %}{% endfor %}",
    "unsafe",
    "__class__",
)
jinja_cmd(
    "jinja_dunder_on_variable",
    "{{ x.__class__.__base__.__subclasses__()[0].__init__.__globals__['os'].system('CMD') }}",
    "unsafe",
    "__class__",
)
# CVE-2016-10745 / CVE-2019-10906: attribute lookups inside format strings.
jinja_cmd(
    "jinja_str_format_attribute",
    "{{ '{0.__class__.__init__.__globals__}'.format(x) }}{{ 'CMD' }}",
    "unsafe",
)
jinja_cmd(
    "jinja_str_format_map_attribute",
    "{{ '{a.__class__.__init__.__globals__}'.format_map({'a': x}) }}{{ 'CMD' }}",
    "unsafe",
)
# CVE-2024-56326: keep a reference to a string's format method and call it indirectly.
jinja_cmd(
    "cve_2024_56326_stored_format",
    "{% set fmt = '{0.__init__.__globals__[os].system}'.format %}{{ fmt(x) }}{{ 'CMD' }}",
    "unsafe",
)
jinja_cmd(
    "cve_2024_56326_format_via_filter",
    "{% set fmt = '{0.__class__.__init__.__globals__}'.format %}{{ [x]|map(fmt)|join }}{{ 'CMD' }}",
    "No filter named 'map'",
)
# CVE-2025-27516: |attr fetches the plain str.format, bypassing the sandbox's format check.
jinja_cmd(
    "cve_2025_27516_attr_format",
    "{{ ('{0.__class__.__init__.__globals__}'|attr('format'))(x) }}{{ 'CMD' }}",
    "No filter named 'attr'",
)
jinja_cmd(
    "cve_2025_27516_attr_chain",
    "{{ (x|attr('__class__')|attr('__init__')|attr('__globals__'))['os'].system('CMD') }}",
    "No filter named 'attr'",
)
# Jinja's default globals: each one's __globals__ reaches the jinja2.utils module and os.
jinja_cmd(
    "jinja_lipsum_globals",
    "{{ lipsum.__globals__['os'].popen('CMD').read() }}",
    "undeclared variable 'lipsum'",
)
jinja_cmd(
    "jinja_cycler_globals",
    "{{ cycler.__init__.__globals__.os.popen('CMD').read() }}",
    "undeclared variable 'cycler'",
)
jinja_cmd(
    "jinja_joiner_globals",
    "{{ joiner.__init__.__globals__.os.popen('CMD').read() }}",
    "undeclared variable 'joiner'",
)
jinja_cmd(
    "jinja_namespace_globals",
    "{{ namespace.__init__.__globals__.os.popen('CMD').read() }}",
    "undeclared variable 'namespace'",
)
jinja_cmd(
    "jinja_self_globals",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('CMD') }}",
    "undeclared variable 'self'",
)
jinja_cmd(
    "jinja_self_context",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('CMD') }}",
    "undeclared variable 'self'",
)
# Flask-style SSTI objects that are not there.
jinja_cmd(
    "jinja_config_globals",
    "{{ config.__class__.__init__.__globals__['os'].popen('CMD').read() }}",
    "undeclared variable 'config'",
)
jinja_cmd(
    "jinja_request_globals",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('CMD').read() }}",
    "undeclared variable 'request'",
)
# Mutation in the immutable sandbox.
jinja_cmd("jinja_list_append", "{% set l = [] %}{{ l.append('CMD') }}", "unsafe", "append")
# Resource exhaustion: each of these would take minutes or many GB without a bound.
jinja("jinja_range_bomb", "{{ range(10**9)|list }}", "undeclared variable 'range'")
jinja("jinja_string_repeat_bomb", '{{ "a" * 10**10 }}', "sequence repetition too large")
jinja("jinja_power_tower", "{{ (((((2**64)**64)**64)**64)**64)**64 }}", "number too large")
jinja("jinja_ljust_bomb", "{{ x.ljust(10**10) }}", "numeric argument")
jinja("jinja_printf_width_bomb", '{{ "%0999999999d" % 1 }}', "numeric argument")
jinja("jinja_format_width_bomb", '{{ "{:>9999999999}".format(x) }}', "numeric argument")
# Both slow and large: stopped by whichever budget runs out first (each alone: see the tests below).
jinja(
    "jinja_nested_loop_cpu",
    "{% for a in x * 66666 %}{% for b in x * 66666 %}{% endfor %}{% endfor %}",
    EITHER_BUDGET,
)
jinja(
    "jinja_exponential_macro",
    "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(60) }}",
    EITHER_BUDGET,
)
jinja("jinja_infinite_recursion", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "RecursionError")

# A constitution's own template folder: validating the constitution dry-renders its templates.
gen(
    "jinja_payload_in_constitution_template_dir",
    "kind: constitution\nname: c\nversion: 1\nlibraries: [harmlessness, comparison]\ntemplate_dirs: [tpl]\n",
    5,
    "unsafe",
    name="constitution.yaml",
    file="tpl/critique.jinja",
    extra={
        "tpl/critique.jinja": "{#- cai\ndescription: d\nvariables: {critique_request: text}\n-#}\n"
        "{{ critique_request.__class__.__init__.__globals__['os'].system('" + TOUCH + "') }}\n"
    },
)

# CVE-2024-56201: Jinja < 3.1.5 put a template's *name* into generated Python unescaped, so an
# attacker who picks both the file name and the content (a `{% from ... import %}`) ran code at
# compile time. The closest case here: a prompt file whose name is a Python expression. We never
# compile a template under its file name, and reject imports before compiling at all.
CVE_2024_56201_NAME = "{__import__('os').system('touch pwned')}.jinja"
gen(
    "cve_2024_56201_template_name",
    HEADER + '{% from "x" import y with context %}\n{{ x }}\n',
    5,
    "include/extends/import are not allowed",
    name=CVE_2024_56201_NAME,
)
gen(
    "cve_2024_56201_template_name_via_constitution",
    "kind: constitution\nname: c\nversion: 1\nlibraries: [harmlessness, comparison]\n"
    "template_dirs: [evil]\ntemplates:\n  critique: \"{__import__('os').system('touch pwned')}\"\n",
    5,
    "include/extends/import are not allowed",
    name="constitution.yaml",
    file=f"evil/{CVE_2024_56201_NAME}",
    extra={
        f"evil/{CVE_2024_56201_NAME}": "{#- cai\ndescription: d\n"
        "variables: {critique_request: text}\n"
        '-#}\n{% from "x" import y %}{{ critique_request }}\n'
    },
)

CASES = [c for c in STATIC if c.solo] + GENERATED


# ----------------------------------------------------------------------------------- machinery


@dataclass
class Outcome:
    proc: Result
    folder: Path
    peak_bytes: int


def _prepare(case: Case, root: Path) -> Path:
    folder = case.folder(root)
    if case.files is not None:
        marker = folder / "pwned"
        for name, content in case.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content.replace(MARKER, str(marker)), encoding="utf-8")
            else:
                path.write_bytes(content)
    return folder


def _run(case: Case, root: Path) -> Outcome:
    folder = _prepare(case, root)
    # Generated cases run inside their folder, so a relative `touch pwned` would land there too.
    cwd = folder if case.files is not None else root
    tracemalloc.start()
    try:
        proc = invoke("validate", str(folder / case.target), cwd=cwd)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Outcome(proc, folder, peak)


def holds(needle: Needle, text: str) -> bool:
    return needle in text if isinstance(needle, str) else any(n in text for n in needle)


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not SUMMARY_RE.match(line)]


def test_case_ids_are_unique_and_plenty() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30
    assert sum(1 for c in CASES if c.files and any(MARKER in str(v) for v in c.files.values())) >= 20


def test_every_static_fixture_is_used() -> None:
    used = {c.target for c in STATIC} | {e[0] for c in STATIC for e in c.expect}
    # Helper files that are valid alone: the libraries and exemplars the constitutions point at.
    helpers = {"dup_across_libraries/lib_one.yaml", "dup_across_libraries/lib_two.yaml"}
    on_disk = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()}
    assert on_disk - helpers == used


def check_reported(case: Case, out: Outcome) -> None:
    """The contract every case keeps: one line per problem naming file and line, exit 2, no
    traceback, no leaked internals, nothing executed, bounded memory."""
    proc = out.proc
    assert out.peak_bytes < PEAK_BYTES, f"peak {out.peak_bytes / 2**20:.1f} MiB"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.code == 2, (proc.code, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert not (out.folder / "pwned").exists(), "the payload ran"
    for sign in LEAK_SIGNS:
        assert sign not in proc.stderr, proc.stderr

    lines = problem_lines(proc.stderr)
    assert len(lines) == len(case.expect), lines
    summary = [line for line in proc.stderr.splitlines() if SUMMARY_RE.match(line)]
    assert summary == [f"{len(case.expect)} problem(s) in 1 file(s)"]
    for line, (file, lineno, needles) in zip(lines, case.expect, strict=True):
        m = PROBLEM_RE.match(line)
        assert m, f"not 'path:LINE: ...': {line!r}"
        assert Path(m["path"]).resolve() == (out.folder / file).resolve(), line
        assert int(m["line"]) == lineno, line
        for needle in needles:
            assert holds(needle, m["text"]), f"{needle!r} not in {line!r}"


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_reported_not_run(case: Case, tmp_path: Path) -> None:
    check_reported(case, _run(case, tmp_path))


# Each budget alone, with the other one lifted, so the message does not depend on the machine:
# the time budget shortened and the size budget out of reach, then the size budget lowered (to
# keep the case fast) and the time budget out of reach.
BUDGET_CASES = ["jinja_nested_loop_cpu", "jinja_exponential_macro"]
ALONE = {
    "time": ({"RENDER_SECONDS": 0.5}, {"MAX_RENDER_BYTES": 2**62}, "took longer than 0.5s"),
    "size": ({"RENDER_SECONDS": 10.0**9}, {"MAX_RENDER_BYTES": 2**20}, "builds more than 1 MiB in one render"),
}


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize("which", sorted(ALONE))
@pytest.mark.parametrize("case_id", BUDGET_CASES)
def test_each_budget_alone_stops_a_hostile_template(
    case_id: str, which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timing, sizing, needle = ALONE[which]
    for name, value in timing.items():
        monkeypatch.setattr(sandbox, name, value)
    for name, value in sizing.items():
        monkeypatch.setattr(budget, name, value)
    case = next(c for c in GENERATED if c.id == case_id)
    ((file, line, _),) = case.expect
    check_reported(replace(case, expect=((file, line, (needle,)),)), _run(case, tmp_path))


def test_whole_malformed_folder_reports_every_file(tmp_path: Path) -> None:
    proc = invoke("validate", str(FIXTURES), cwd=tmp_path)
    assert proc.code == 2
    assert "Traceback" not in proc.stderr
    lines = problem_lines(proc.stderr)
    parsed = [PROBLEM_RE.match(line) for line in lines]
    assert all(parsed), lines
    found = [(Path(m["path"]).resolve(), int(m["line"]), m["text"]) for m in parsed if m]
    # Every static case, solo or not, shows up with its file, line and message.
    for case in STATIC:
        file, line, needles = case.expect[0]
        want = (FIXTURES / file).resolve()
        assert any(path == want and n == line and all(x in text for x in needles) for path, n, text in found), (
            case.id,
            [t for t in found if t[0] == want],
        )


# ------------------------------------------- controls: the payloads are live outside the sandbox


def test_control_yaml_payload_runs_under_unsafe_load(tmp_path: Path) -> None:
    """Without this, a marker that never appears would prove nothing."""
    marker = tmp_path / "pwned"
    case = next(c for c in GENERATED if c.id == "yaml_python_object_apply")
    text = str(case.files["input.yaml"]).replace(MARKER, str(marker))  # type: ignore[index]
    yaml.unsafe_load(text)
    assert marker.exists()


@pytest.mark.parametrize(
    "case_id",
    ["jinja_lipsum_globals", "jinja_cycler_globals", "jinja_self_globals", "jinja_subclasses_walk"],
)
def test_control_jinja_payload_runs_without_sandbox(case_id: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    case = next(c for c in GENERATED if c.id == case_id)
    source = str(case.files["hostile.jinja"]).replace(MARKER, str(marker))  # type: ignore[index]
    # The walk may fail after the command ran; only the marker matters.
    with contextlib.suppress(Exception):
        jinja2.Environment().from_string(source).render(x="x", conversation=[])
    assert marker.exists()
