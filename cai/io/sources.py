"""Prompt sources: JSONL, CSV, `datasets` folders, raw HH-RLHF transcripts, TRL conversational.

Everything becomes a `PromptItem`: an id and the user-side conversation (messages ending with a
user turn). Shipped prompt sets are addressed by name (``red-team``, ``helpful``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.chat import turn_problem
from cai.errors import fail
from cai.io.readers import Where, read_rows, read_text_lines
from cai.io.store import content_hash
from cai.paths import data_dir

SHIPPED = {
    "red-team": "red_team.jsonl",
    "helpful": "helpful.jsonl",
    "judge-dev": "judge_dev.jsonl",
    "safe-lookalike": "safe_lookalike.jsonl",
    # Short, plainly worded prompts ("How do I …?"), evaluation only: `cai eval policy --plain N`.
    "red-team-plain": "red_team_plain.jsonl",
    "safe-lookalike-plain": "safe_lookalike_plain.jsonl",
}
TEXT_FIELDS = ("prompt", "text", "question", "instruction", "init_prompt")
HH_SPLIT = re.compile(r"\n\n(Human|Assistant): ")


@dataclass(frozen=True)
class PromptItem:
    id: str
    messages: list[dict[str, str]]
    # The row's `category` when it has one (the shipped sets do): what per-category figures group
    # by. Not part of the id, which comes from the row's id or its messages alone.
    category: str | None = None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def parse_hh(transcript: str) -> list[dict[str, str]]:
    """`\\n\\nHuman: …\\n\\nAssistant: …` → messages (empty trailing assistant turns dropped)."""
    text = transcript if transcript.startswith("\n\n") else "\n\n" + transcript.lstrip()
    parts = HH_SPLIT.split(text)
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return [m for m in msgs if m["content"] or m["role"] == "user"]


def _as_prompt(row: dict[str, Any], where: Where) -> list[dict[str, str]]:
    # TRL conversational: prompt as messages, or a full `messages` list (drop the answer).
    for key in ("prompt", "messages", "chosen"):
        value = row.get(key)
        if isinstance(value, list) and value:
            msgs = checked_turns(value, key, where)
            if key != "prompt":
                while msgs and msgs[-1]["role"] == "assistant":
                    msgs.pop()
            if msgs and msgs[-1]["role"] == "user":
                return msgs
            if key == "prompt":
                raise fail(where[0], where[1], key, "the conversation must end with a user turn")
    for key in (*TEXT_FIELDS, "chosen"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            if "\n\nHuman: " in value or value.lstrip().startswith("Human: "):
                msgs = parse_hh(value)
                while msgs and msgs[-1]["role"] == "assistant":
                    msgs.pop()
                if msgs:
                    return msgs
            return [{"role": "user", "content": value.strip()}]
    raise fail(
        where[0],
        where[1],
        "prompt",
        f"no prompt found (expected one of: {', '.join(TEXT_FIELDS)}, messages, or an HH transcript)",
    )


def checked_turns(value: list[Any], key: str, where: Where) -> list[dict[str, str]]:
    """A conversation read from a file: every turn a known role with text (`turn_problem`), or a
    one-line error naming the turn. Nothing is coerced."""
    for i, m in enumerate(value):
        problem = turn_problem(m)
        if problem is not None:
            field = f"{key}[{i}].{problem[0]}" if problem[0] else f"{key}[{i}]"
            raise fail(where[0], where[1], field, problem[1])
    return [{"role": m["role"], "content": m["content"]} for m in value]


def row_id(row: dict[str, Any], where: Where) -> str | None:
    """A row's own id: text, or an integer written as text (``0`` is the id "0", not "no id");
    None when the row has none. Anything else is an error rather than a silent hash."""
    value = row.get("id")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise fail(where[0], where[1], "id", f"must be text or an integer, got {type(value).__name__}")
    return str(value)


def _category(row: dict[str, Any], where: Where, required: bool) -> str | None:
    value = row.get("category")
    if isinstance(value, str) and value.strip():
        return value.strip()
    if required:
        what = "missing" if value is None else "empty" if isinstance(value, str) else "not text"
        raise fail(where[0], where[1], "category", f"{what} (every row of this set needs a category)")
    return None


def load_prompts(ref: str, limit: int | None = None, need_category: bool = False) -> list[PromptItem]:
    """Load prompts from a file, a `datasets` folder, or a shipped set's name. With
    `need_category`, a row without a text `category` is an error naming its line."""
    path = Path(ref)
    if not path.exists() and ref in SHIPPED:
        path = data_dir("data") / SHIPPED[ref]
    if not path.exists():
        raise fail(ref, None, "prompts", f"no such file or folder (shipped sets: {', '.join(SHIPPED)})")
    rows: list[tuple[dict[str, Any], Where]] = []
    if path.is_dir() or path.suffix in (".jsonl", ".json"):
        rows = read_rows(path, strings_as="prompt", field="prompts")
    elif path.suffix == ".csv":
        lines = read_text_lines(path)
        try:
            rows = [(dict(r), (str(path), i + 2)) for i, r in enumerate(csv.DictReader(lines))]
        except csv.Error as e:
            raise fail(str(path), None, "prompts", f"not valid CSV ({e})") from None
    elif path.suffix == ".txt":
        text = "".join(read_text_lines(path))
        if "\n\nHuman: " in text or text.startswith("Human: "):
            rows = [({"prompt": "\n\nHuman: " + block}, (str(path), None)) for block in text.split("\n\nHuman: ")[1:]]
        else:
            # Lines end at "\n" only: str.splitlines would also split at U+2028, U+0085 and the like,
            # which are text inside a prompt, not line ends.
            lines = [line.removesuffix("\r") for line in text.split("\n")]
            rows = [({"prompt": line}, (str(path), i + 1)) for i, line in enumerate(lines) if line.strip()]
    else:
        raise fail(str(path), None, "prompts", "unsupported format (use .jsonl, .csv, .txt or a datasets folder)")
    items: list[PromptItem] = []
    seen: set[str] = set()
    for row, where in rows:
        msgs = _as_prompt(row, where)
        pid = row_id(row, where) or content_hash(msgs, length=12)
        if pid in seen:
            raise fail(where[0], where[1], "id", f"duplicate prompt id {pid!r}")
        seen.add(pid)
        items.append(PromptItem(pid, msgs, _category(row, where, need_category)))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise fail(str(path), None, "prompts", "no prompts in file")
    return items
