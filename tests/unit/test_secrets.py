"""Secrets: a key put anywhere a user could put one never reaches a file cai writes.

The key goes in a recipe's or command's ``base_url`` (userinfo and a query parameter) and in the
environment variable a backend reads, and a scripted server echoes it back (whole and in part)
in error bodies, completions and log-probability tokens. Then every byte of every file under the
output folder is searched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.redact import REDACTED, contains_secret, known_secrets, redact, redact_text, redact_url, url_secrets
from tests.helpers import invoke
from tests.servers import Reply, ScriptedServer, completion, error_body

USER_KEY = "sk-userinfo-5f1c9a7e2b8d4c6f"  # in base_url's userinfo
QUERY_KEY = "sk-query-8e3b1d9c7a2f6e4b"  # in base_url's query string
ENV_KEY = "sk-env-0a9b8c7d6e5f4a3b2c1d"  # the value of the variable named by api_key_env
KEY_ENV = "CAI_TEST_SECRET_KEY"
KEYS = (USER_KEY, QUERY_KEY, ENV_KEY)


def _leaks(folder: Path) -> list[str]:
    """Every file (and file name) under ``folder`` that holds a key or an 8+ character piece of one."""
    pieces = {k[i : i + 12].encode() for k in KEYS for i in range(len(k) - 11)}
    found = []
    for path in sorted(folder.rglob("*")):
        if any(p.decode() in str(path) for p in pieces):
            found.append(f"{path} (name)")
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(folder)}: {p.decode()!r}" for p in pieces if p in data]
    return found


def _echoing_server(server: ScriptedServer) -> None:
    """Fails first with the key echoed in the error (whole, and a fragment of another), then
    answers with the key in the completion text and among the log-probability tokens (an answer
    that fails its record: answers are data, never rewritten), then answers cleanly."""
    echo = f"Incorrect API key provided: {ENV_KEY}. Also saw {USER_KEY[:14]}… and {QUERY_KEY[3:20]}"
    server.script = [
        Reply(status=401, body=error_body(401, echo)),
        Reply(body=completion(f"(A) because {ENV_KEY}", top_logprobs=[("A", -0.2), (ENV_KEY, -1.9), ("B", -2.0)])),
        Reply(body=completion("(A) because", top_logprobs=[("A", -0.2), ("B", -2.0)])),
    ]


def _base_url(server: ScriptedServer) -> str:
    host = server.base_url.removeprefix("http://")
    return f"http://user:{USER_KEY}@{host}?api_key={QUERY_KEY}&mode=chat"


# ---- the function ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("http://user:KEY123456@host:8080/v1", "http://***@host:8080/v1"),
        ("https://KEY123456@host/v1?x=1", "https://***@host/v1?x=1"),
        (
            "https://host/v1?key=A1&api_key=B2&token=C3&access_token=D4&sig=E5&model=m",
            "https://host/v1?key=***&api_key=***&token=***&access_token=***&sig=***&model=m",
        ),
        ("https://host/cb#access_token=T0K3N&state=s", "https://host/cb#access_token=***&state=s"),
        ("https://host/v1?X-Amz-Signature=abc#f", "https://host/v1?X-Amz-Signature=***#f"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, clean: str) -> None:
    assert redact_url(url) == clean


def test_redact_text_and_data() -> None:
    secrets = {"sk-live-0123456789abcdef"}
    text = "see http://u:pw-secret-1@h/v1?token=t0ken!! and sk-live-0123456789abcdef, part sk-live-0123…"
    # An echoed piece goes from its first window holding a digit: "sk-live-" alone is a word-like
    # prefix many keys share, not the key.
    assert redact_text(text, secrets) == "see http://***@h/v1?token=*** and ***, part sk-***…"
    # Short values are not secrets (they would blank ordinary words); unrelated text is untouched.
    assert redact_text("none of it", {"none"}) == "none of it"
    data = {"models": {"base_url": "http://u:p@h/v1"}, "list": ["sk-live-0123456789abcdef", 3, None]}
    assert redact(data, secrets) == {"models": {"base_url": "http://***@h/v1"}, "list": ["***", 3, None]}


def test_known_secrets_are_the_keys_cai_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the keys cai uses (OPENAI_API_KEY, the api_key_env it was told to read) and URL
    credentials: other variables, whatever their names, are not cai's to redact."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-abcdefgh")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    monkeypatch.setenv("POSTGRES_PASSWORD", "postgres")
    monkeypatch.setenv("MY_KEY_VAR", "not-a-secret-name")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://me:base-url-pass@h/v1")
    monkeypatch.setenv(KEY_ENV, ENV_KEY)
    found = known_secrets(urls=[f"http://h/v1?api_key={QUERY_KEY}"], env=[KEY_ENV])
    assert found == {"sk-openai-abcdefgh", "base-url-pass", QUERY_KEY, ENV_KEY}
    assert url_secrets(f"http://user:{USER_KEY}@h/v1") == {USER_KEY}
    assert url_secrets(f"http://{USER_KEY}@h/v1") == {USER_KEY}  # a user name alone is the credential


@pytest.mark.parametrize("key", ["sk-no-key-required", "not-needed", "EMPTY", "dummy"])
def test_placeholder_keys_are_not_secrets(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """Local servers are often given a placeholder key; answers saying "required" or "needed"
    are not leaks, and error messages keep their words."""
    monkeypatch.setenv("OPENAI_API_KEY", key)
    assert known_secrets() == frozenset()
    assert not contains_secret("A permit is required; nothing more is needed.")
    assert redact_text("error: field required") == "error: field required"


def test_only_pieces_of_a_key_that_hold_a_digit_count() -> None:
    """A word-like piece ("required" of a key made of words) is not the key; a piece of a random
    key, in any case, is."""
    assert contains_secret("SK-ABCD1234 was echoed", {"sk-abcd1234efgh5678"})
    assert not contains_secret("a permit is required", {"sk-no-key-required-9"})
    assert contains_secret("the whole sk-no-key-required-9 is", {"sk-no-key-required-9"})


# ---- every place a user could put one -------------------------------------------------------


def test_cai_run_writes_no_key_anywhere(tmp_path: Path, scripted_server: ScriptedServer) -> None:
    _echoing_server(scripted_server)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: secrets\n"
        f"models: {{policy: fake, judge: 'openai:scripted', base_url: '{_base_url(scripted_server)}', "
        f"api_key_env: {KEY_ENV}, concurrency: 1}}\n"
        "stages:\n"
        "  critique:\n    prompts: red-team\n    limit: 2\n"
        # One order per pair: the server always answers (A), which asked in both orders is a tie
        # on every pair, and a label run with nothing to export stops with exit 2. Four prompts:
        # the server's first two answers each fail a question (the echoed key, the key in the
        # answer), which must stay under half of them.
        "  label:\n    prompts: red-team\n    limit: 4\n    max_failures: 0.5\n    orders: one\n"
    )
    out = tmp_path / "run"
    r = invoke("run", str(recipe), "--out", str(out), "--quiet", env={KEY_ENV: ENV_KEY})
    assert r.code == 0, r.stderr
    assert scripted_server.attempts > 1  # the judge really went to the server
    assert {"recipe.json", "log.txt", "report.html", "run_summary.json"} <= {p.name for p in out.iterdir()}
    assert _leaks(out) == []
    assert not any(k in r.stdout + r.stderr for k in KEYS)
    # What was redacted is still recognisable: the endpoint, minus its credentials.
    assert f"***@{scripted_server.base_url.removeprefix('http://')}" in (out / "recipe.json").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ("critique", "--prompts", "red-team", "--limit", "2", "--model", "openai:scripted"),
        ("label", "--pairs", "judge-dev", "--limit", "2", "--judge", "openai:scripted"),
    ],
    ids=["critique", "label"],
)
def test_stage_commands_write_no_key_anywhere(
    tmp_path: Path, scripted_server: ScriptedServer, args: tuple[str, ...]
) -> None:
    _echoing_server(scripted_server)
    out = tmp_path / "out"
    r = invoke(
        *args,
        "--base-url",
        _base_url(scripted_server),
        "--api-key-env",
        KEY_ENV,
        "--concurrency",
        "1",
        "--out",
        str(out),
        "--quiet",
        env={KEY_ENV: ENV_KEY},
    )
    assert scripted_server.attempts > 1, r.stderr
    assert (out / "records.jsonl").is_file(), r.stderr
    records = (out / "records.jsonl").read_text()
    assert REDACTED in records  # the echoes were there, and were blanked
    assert _leaks(out) == []
    assert not any(k in r.stdout + r.stderr for k in KEYS)


def test_report_of_an_older_run_folder_strips_the_key(tmp_path: Path) -> None:
    """A folder written before redaction existed still holds the key in recipe.json."""
    out = tmp_path / "run"
    out.mkdir()
    recipe = {"name": "old", "constitution": "default", "models": {"base_url": f"http://u:{USER_KEY}@h/v1"}}
    (out / "recipe.json").write_text(json.dumps(recipe))
    (out / "run_summary.json").write_text("{}")
    r = invoke("report", str(out), env={KEY_ENV: ENV_KEY})
    assert r.code == 0, r.stderr
    page = (out / "report.html").read_text()
    assert "http://***@h/v1" in page and USER_KEY not in page


def test_run_log_lines_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cai.run.pipeline import RunLog

    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    RunLog(tmp_path / "log.txt", quiet=True)(f"label: endpoint http://u:{USER_KEY}@h/v1 said {ENV_KEY}")
    assert _leaks(tmp_path) == []
    assert "http://***@h/v1 said ***" in (tmp_path / "log.txt").read_text()
