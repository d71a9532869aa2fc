"""Constitutions: include/merge semantics, path resolution, fingerprints, selection, sampling."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from cai.constitution.include import MAX_INCLUDE_DEPTH
from cai.constitution.load import load_constitution
from cai.errors import CaiError
from cai.paths import data_dir

CRIT_LIB = """\
kind: critique-principles
version: 2
principles:
  - id: alpha
    critique: "Critique alpha."
    revision: "Revise alpha."
    tags: [red]
  - id: beta
    version: 5
    critique: "Critique beta."
    revision: "Revise beta."
    tags: [blue]
  - id: gamma
    critique: "Critique gamma."
    revision: "Revise gamma."
    tags: [red, blue]
  - id: delta
    critique: "Critique delta."
    revision: "Revise delta."
"""

COMP_LIB = """\
kind: comparison-principles
version: 1
principles:
  - id: q-one
    question: "Which is kinder?"
    tags: [red]
  - id: q-two
    question: "Which is safer?"
  - id: q-three
    question: "Which is more honest?"
"""

CRIT_EXEMPLARS = """\
kind: critique-exemplars
exemplars:
  - prompt: "p"
    response: "r"
    rounds:
      - {principle: alpha, critique: "c", revision: "v"}
"""

TEMPLATE = """\
{#- cai
description: A user critique template.
variables: {critique_request: text}
-#}
CUSTOM: {{ critique_request }}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """base/parent.yaml with its own libraries, exemplars and templates; other/child.yaml on top."""
    base = tmp_path / "base"
    write(base / "libs" / "crit.yaml", CRIT_LIB)
    write(base / "libs" / "comp.yaml", COMP_LIB)
    write(base / "examples" / "crit.yaml", CRIT_EXEMPLARS)
    write(base / "tpl" / "critique.jinja", TEMPLATE)
    write(
        base / "parent.yaml",
        """\
kind: constitution
name: parent
version: 1
description: The parent.
system_prompt: "Be good."
libraries: [libs/crit.yaml, libs/comp.yaml]
template_dirs: [tpl]
critique:
  rounds: 3
  sampling: {replace: false}
  principles: {ids: [alpha, beta], tags: [red]}
  exemplars_file: examples/crit.yaml
comparison:
  principles: {tags: [red]}
""",
    )
    write(
        tmp_path / "other" / "child.yaml",
        """\
kind: constitution
name: child
version: 2
include: ../base/parent.yaml
critique:
  rounds: 2
  principles: {ids: [delta]}
""",
    )
    return tmp_path


def test_include_merges_mappings_and_replaces_lists(tree: Path) -> None:
    c = load_constitution(tree / "other" / "child.yaml")
    assert (c.name, c.spec.version, c.spec.description) == ("child", 2, "The parent.")
    assert c.spec.system_prompt == "Be good."  # inherited scalar
    assert c.spec.critique.rounds == 2  # overridden scalar inside a merged mapping
    assert c.spec.critique.sampling.replace is False  # sibling key kept from the parent
    # `principles` is a mapping, so it merges: the child's `ids` list replaces the parent's
    # (alpha, beta are gone) while the parent's `tags` survive.
    assert c.spec.critique.principles.ids == ["delta"]
    assert c.spec.critique.principles.tags == ["red"]
    assert [v.id for v in c.critique_principles] == ["alpha", "gamma", "delta"]
    assert [v.id for v in c.comparison_principles] == ["q-one"]
    assert c.chain == [
        str((tree / "base" / "parent.yaml").resolve()),
        str((tree / "other" / "child.yaml").resolve()),
    ]


def test_child_list_replaces_parent_list_entirely(tree: Path) -> None:
    write(
        tree / "other" / "only-comp.yaml",
        """\
kind: constitution
name: c
version: 1
include: ../base/parent.yaml
libraries: [../base/libs/comp.yaml, ../base/libs/crit.yaml]
critique:
  principles: {ids: [], tags: []}
""",
    )
    c = load_constitution(tree / "other" / "only-comp.yaml")
    assert [Path(p).name for p in c.spec.libraries] == ["comp.yaml", "crit.yaml"]
    assert [v.id for v in c.critique_principles] == [
        "alpha",
        "beta",
        "gamma",
        "delta",
    ]  # empty = all


def test_included_relative_paths_resolve_against_their_own_file(tree: Path, monkeypatch) -> None:
    elsewhere = tree / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    c = load_constitution(tree / "other" / "child.yaml")
    base = (tree / "base").resolve()
    assert [Path(p) for p in c.spec.libraries] == [
        base / "libs" / "crit.yaml",
        base / "libs" / "comp.yaml",
    ]
    assert c.spec.critique.exemplars_file == str(base / "examples" / "crit.yaml")
    assert len(c.critique_exemplars) == 1
    assert c.renderer.path_of("critique") == base / "tpl" / "critique.jinja"


def test_include_by_relative_path_from_cwd_is_not_used(tree: Path, monkeypatch) -> None:
    """`include: parent.yaml` means next to the including file, not in the current folder."""
    write(
        tree / "other" / "decoy.yaml",
        "kind: constitution\nname: d\nversion: 1\ninclude: parent.yaml\n",
    )
    monkeypatch.chdir(tree / "base")  # parent.yaml exists here, but not next to decoy.yaml
    with pytest.raises(CaiError) as e:
        load_constitution(tree / "other" / "decoy.yaml")
    (p,) = e.value.problems
    assert Path(p.path).name == "decoy.yaml"
    assert p.line == 4


def test_include_depth_is_bounded(tmp_path: Path) -> None:
    write(
        tmp_path / "c0.yaml",
        "kind: constitution\nname: c0\nversion: 1\nlibraries: [harmlessness, comparison]\n",
    )
    for i in range(1, MAX_INCLUDE_DEPTH + 2):
        write(
            tmp_path / f"c{i}.yaml",
            f"kind: constitution\nname: c{i}\nversion: 1\ninclude: c{i - 1}.yaml\n",
        )
    load_constitution(tmp_path / f"c{MAX_INCLUDE_DEPTH - 1}.yaml")
    with pytest.raises(CaiError) as e:
        load_constitution(tmp_path / f"c{MAX_INCLUDE_DEPTH + 1}.yaml")
    assert "deeper than" in str(e.value)


def test_shipped_constitution_by_name_and_by_path() -> None:
    by_name = load_constitution("harmless")
    by_path = load_constitution(data_dir("constitution") / "harmless.yaml")
    assert by_name.fingerprint() == by_path.fingerprint()
    assert len(by_name.critique_principles) == 16
    assert len(by_name._all_comparison) == 17
    assert 4 <= len(by_name.critique_exemplars) <= 5
    assert by_name.comparison_exemplars


def test_shipped_include_variant() -> None:
    parent, child = load_constitution("harmless"), load_constitution("harmless-concise")
    assert [Path(p).name for p in child.chain] == ["harmless.yaml", "harmless-concise.yaml"]
    assert child.spec.critique.rounds != parent.spec.critique.rounds
    assert child.comparison_principles == parent.comparison_principles  # inherited
    assert child.fingerprint() != parent.fingerprint()


def test_versions_and_refs(tree: Path) -> None:
    c = load_constitution(tree / "base" / "parent.yaml")
    refs = {v.id: v.ref for v in c.critique_principles}
    assert refs == {
        "alpha": "alpha@2",
        "beta": "beta@5",
        "gamma": "gamma@2",
    }  # library 2, beta own 5
    assert c.critique_principle("delta").ref == "delta@2"  # unselected but known
    with pytest.raises(CaiError) as e:
        c.critique_principle("alpah")
    assert e.value.problems[0].hint == "alpha"


def test_selection_keeps_library_order(tree: Path) -> None:
    write(
        tree / "base" / "order.yaml",
        """\
kind: constitution
name: o
version: 1
libraries: [libs/crit.yaml, libs/comp.yaml]
critique:
  principles: {ids: [delta, alpha], tags: [blue]}
""",
    )
    c = load_constitution(tree / "base" / "order.yaml")
    assert [v.id for v in c.critique_principles] == ["alpha", "beta", "gamma", "delta"]


# ------------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_stable_across_copies(tree: Path, tmp_path_factory) -> None:
    original = load_constitution(tree / "other" / "child.yaml").fingerprint()
    copy = tmp_path_factory.mktemp("copy") / "moved"
    shutil.copytree(tree, copy)
    assert load_constitution(copy / "other" / "child.yaml").fingerprint() == original
    assert load_constitution(tree / "other" / "child.yaml").fingerprint() == original  # and repeatable


def test_shipped_fingerprint_is_stable_when_copied(tmp_path: Path) -> None:
    shutil.copytree(data_dir("constitution"), tmp_path / "constitution")
    assert (
        load_constitution(tmp_path / "constitution" / "harmless.yaml").fingerprint()
        == load_constitution("harmless").fingerprint()
    )


def test_fingerprint_ignores_yaml_formatting(tree: Path) -> None:
    before = load_constitution(tree / "base" / "parent.yaml").fingerprint()
    write(
        tree / "base" / "parent.yaml",
        """\
# Same data, different layout, comments and key order.
kind: constitution
version: 1
name: 'parent'
comparison: {principles: {tags: [red]}}
critique:
  exemplars_file: examples/crit.yaml
  principles:
    tags:
      - red
    ids:
      - alpha
      - beta
  sampling:
    replace: no
  rounds: 3
template_dirs: [tpl]
libraries:
  - libs/crit.yaml
  - libs/comp.yaml
system_prompt: >-
  Be good.
description: "The parent."
""",
    )
    assert load_constitution(tree / "base" / "parent.yaml").fingerprint() == before


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        (
            "base/libs/crit.yaml",
            "Critique alpha.",
            "Critique alpha, please.",
        ),  # selected principle text
        ("base/libs/comp.yaml", "Which is kinder?", "Which is gentler?"),
        ("base/libs/crit.yaml", "version: 2", "version: 3"),
        ("base/tpl/critique.jinja", "CUSTOM:", "CUSTOMISED:"),  # a template it uses
        ("base/examples/crit.yaml", 'critique: "c"', 'critique: "cc"'),  # an exemplar in a file
        ("other/child.yaml", "rounds: 2", "rounds: 3"),
    ],
)
def test_fingerprint_changes_with_content(tree: Path, path: str, old: str, new: str) -> None:
    before = load_constitution(tree / "other" / "child.yaml").fingerprint()
    f = tree / path
    assert old in f.read_text()
    f.write_text(f.read_text().replace(old, new))
    assert load_constitution(tree / "other" / "child.yaml").fingerprint() != before


def test_fingerprint_covers_a_shadowing_template(tree: Path, tmp_path: Path) -> None:
    """A template folder that overrides a shipped template changes what the model sees."""
    c = tree / "base" / "plain.yaml"
    write(c, "kind: constitution\nname: p\nversion: 1\nlibraries: [harmlessness, comparison]\n")
    shipped = load_constitution(c).fingerprint()
    write(
        tree / "base" / "tpl2" / "revision.jinja",
        (data_dir("prompts") / "revision.jinja").read_text() + "\nOne more line.\n",
    )
    c.write_text(c.read_text() + "template_dirs: [tpl2]\n")
    assert load_constitution(c).fingerprint() != shipped


# -------------------------------------------------------------------------------- sampling


@pytest.fixture
def parent(tree: Path):
    return load_constitution(tree / "base" / "parent.yaml")


def test_sampling_with_replacement_is_seeded_and_covers_pool(tree: Path) -> None:
    c = load_constitution(tree / "other" / "child.yaml")
    c.spec = c.spec.model_copy(
        update={
            "critique": c.spec.critique.model_copy(
                update={"sampling": c.spec.critique.sampling.model_copy(update={"replace": True})}
            )
        }
    )
    a = [v.id for v in c.sample_critique(random.Random(7), rounds=200)]
    b = [v.id for v in c.sample_critique(random.Random(7), rounds=200)]
    other = [v.id for v in c.sample_critique(random.Random(8), rounds=200)]
    assert a == b
    assert a != other
    assert set(a) == {"alpha", "gamma", "delta"}
    assert max(Counter(a).values()) < 120  # roughly uniform, not stuck on one
    # With replacement, repeats inside a short draw happen for some seed.
    assert any(len(set(v.id for v in c.sample_critique(random.Random(s), rounds=3))) < 3 for s in range(20))


def test_sampling_without_replacement_is_a_permutation_per_pass(parent) -> None:
    assert parent.spec.critique.sampling.replace is False
    pool = {v.id for v in parent.critique_principles}
    n = len(pool)
    draws = [v.id for v in parent.sample_critique(random.Random(3), rounds=4 * n + 1)]
    assert len(draws) == 4 * n + 1
    for k in range(4):
        assert set(draws[k * n : (k + 1) * n]) == pool
    assert draws == [v.id for v in parent.sample_critique(random.Random(3), rounds=4 * n + 1)]
    assert len(parent.sample_critique(random.Random(0))) == parent.spec.critique.rounds
    orders = {tuple(v.id for v in parent.sample_critique(random.Random(s), rounds=n)) for s in range(30)}
    assert len(orders) > 1  # the seed matters


def test_sampling_uses_only_the_given_rng(parent) -> None:
    random.seed(1)
    first = [v.id for v in parent.sample_critique(random.Random(5), rounds=6)]
    random.seed(2)
    assert [v.id for v in parent.sample_critique(random.Random(5), rounds=6)] == first


def test_sample_comparison(tree: Path) -> None:
    write(
        tree / "base" / "all.yaml",
        "kind: constitution\nname: a\nversion: 1\nlibraries: [libs/crit.yaml, libs/comp.yaml]\n",
    )
    c = load_constitution(tree / "base" / "all.yaml")
    assert len(c.comparison_principles) == 3
    two = c.sample_comparison(random.Random(1), 2)
    assert len(two) == 2
    assert len({v.id for v in two}) == 2
    assert two == c.sample_comparison(random.Random(1), 2)
    assert c.sample_comparison(random.Random(1), 10) == c.comparison_principles
    seen = {v.id for s in range(30) for v in c.sample_comparison(random.Random(s), 1)}
    assert seen == {"q-one", "q-two", "q-three"}
