"""Prompt templates: how a conversation becomes the plain text a GPT reads and continues.

A template gives each role (system, user, assistant) a line of text with one `{content}` slot:

    DEFAULT_TEMPLATE = {"system": "{content}\\n", "user": "Question: {content}\\n", "assistant": "Answer: {content}\\n"}

so the example {"prompt": "2+3", "completion": "5"} reads

    Question: 2+3
    Answer: 5
    <|endoftext|>            (when the tokenizer has one)

Plain letters, a colon and line breaks only: every tokenizer can encode them, the char tokenizer of
tiny Shakespeare included (it knows no `#`, `<` or `|`, so ChatML-style markers would not do).

What the model is trained on (the loss) and what it is asked to write (generation) both come from
splitting each role's text at `{content}`: for the assistant, the text before the slot ("Answer: ")
belongs to the prompt, the content and the text after it ("5\\n", then <|endoftext|>) are the
completion. `apply_template(template, messages)` renders a conversation and ends with the assistant's
opening ("Answer: "), which is what `sample --chat` and a server feed the model.

A template is written down as JSON (in meta.json, in a checkpoint's metadata) or given as:

    --template plain                     the default above (a name from TEMPLATES)
    --template my_template.json          a JSON or TOML file with keys system, user, assistant
    --template "Q: {prompt}\\nA: {completion}\\n"    one line: {prompt} and {completion} slots
"""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.errors import GptkitError, UsageError

ROLES = ("system", "user", "assistant")
SLOT = "{content}"

TEMPLATES = {
    "plain": {"system": "{content}\n", "user": "Question: {content}\n", "assistant": "Answer: {content}\n"},
    # Alpaca's layout, for models that were tuned on it (needs '#' in the vocabulary).
    "alpaca": {
        "system": "{content}\n\n",
        "user": "### Instruction:\n{content}\n\n",
        "assistant": "### Response:\n{content}\n\n",
    },
}
DEFAULT_TEMPLATE_NAME = "plain"
DEFAULT_TEMPLATE = TEMPLATES[DEFAULT_TEMPLATE_NAME]


def check_template(template: object, source: str = "the template") -> dict:
    """Return `template` as a {role: text} dict after checking that each role has one {content} slot."""
    if not isinstance(template, dict):
        raise GptkitError(f"{source} is not a table of roles (system, user, assistant)")
    unknown = sorted(set(template) - set(ROLES))
    if unknown:
        raise GptkitError(f"{source} has unknown role(s) {', '.join(unknown)}", hint=f"the roles are {', '.join(ROLES)}")
    checked = {}
    for role in ROLES:
        text = template.get(role, SLOT + "\n" if role == "system" else None)
        if not isinstance(text, str) or text.count(SLOT) != 1:
            raise GptkitError(
                f"{source}: the {role!r} entry must be a string with exactly one {SLOT} slot (got {text!r})",
                hint='e.g. "user": "Question: {content}\\n"',
            )
        checked[role] = text
    return checked


def resolve_template(choice: str | dict | None) -> dict:
    """The template that --template names: None (the default), a name, a JSON/TOML file, or a one-line
    "...{prompt}...{completion}..." string (see the module docstring)."""
    if choice is None:
        return dict(DEFAULT_TEMPLATE)
    if isinstance(choice, dict):
        return check_template(choice)
    if choice in TEMPLATES:
        return dict(TEMPLATES[choice])
    if "{prompt}" in choice or "{completion}" in choice:
        return _from_one_line(choice)
    path = Path(choice)
    if not path.is_file():
        raise UsageError(
            f"--template {choice!r} is neither a template name, a file, nor a string with {{prompt}} and {{completion}}",
            hint=f"names: {', '.join(TEMPLATES)}; or e.g. --template 'Q: {{prompt}}\\nA: {{completion}}\\n'",
        )
    return check_template(_read_table(path), str(path))


def _from_one_line(text: str) -> dict:
    """"X{prompt}Y{completion}Z" -> user "X{content}", assistant "Y{content}Z"."""
    if text.count("{prompt}") != 1 or text.count("{completion}") != 1 or text.index("{prompt}") > text.index("{completion}"):
        raise UsageError(
            f"--template {text!r} needs one {{prompt}} followed by one {{completion}}",
            hint="e.g. --template 'Q: {prompt}\\nA: {completion}\\n'",
        )
    before, rest = text.split("{prompt}")
    middle, after = rest.split("{completion}")
    return check_template({"system": SLOT + "\n", "user": before + SLOT, "assistant": middle + SLOT + after})


def _read_table(path: Path) -> object:
    try:
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            from gptkit.config import tomllib

            return tomllib.loads(raw)
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise GptkitError(f"{path} is not a valid {'TOML' if path.suffix == '.toml' else 'JSON'} template ({e})") from None


def split_role(template: dict, role: str) -> tuple[str, str]:
    """The text before and after a role's {content} slot."""
    before, after = template[role].split(SLOT)
    return before, after


def segments(template: dict, messages: list[dict]) -> list[tuple[str, bool]]:
    """A conversation as (text, trained) pieces in order: trained is True for what the model learns to
    write (each assistant message's content and the text after its slot), False for the prompt around it.
    Adjacent prompt pieces are joined, so each piece is tokenized whole."""
    pieces: list[tuple[str, bool]] = []
    for message in messages:
        before, after = split_role(template, message["role"])
        if message["role"] == "assistant":
            pieces += [(before, False), (message["content"] + after, True)]
        else:
            pieces.append((before + message["content"] + after, False))
    joined: list[tuple[str, bool]] = []
    for text, trained in pieces:
        if joined and joined[-1][1] == trained:
            joined[-1] = (joined[-1][0] + text, trained)
        elif text:
            joined.append((text, trained))
    return joined


def as_messages(messages_or_prompt: str | list[dict]) -> list[dict]:
    if isinstance(messages_or_prompt, str):
        return [{"role": "user", "content": messages_or_prompt}]
    return list(messages_or_prompt)


def apply_template(template: dict, messages_or_prompt: str | list[dict]) -> str:
    """The text to feed a model so that it writes the assistant's next message: the conversation
    rendered with the template, ending with the assistant's opening (e.g. "Question: hi\\nAnswer: ").
    A plain string is one user message."""
    template = check_template(template)
    text = "".join(piece for piece, _ in segments(template, as_messages(messages_or_prompt)))
    return text + split_role(template, "assistant")[0]


def completion_end(template: dict) -> str:
    """What ends an assistant message (the text after its slot): generation can stop there too."""
    return split_role(check_template(template), "assistant")[1]


def run_template(meta: dict, start_template: dict | None) -> dict | None:
    """The template a training run records in its checkpoints: its data's (meta.json "template")
    when the data is instruction data, else the one its starting weights carry (continued training
    on plain text keeps a chat model's template), else None."""
    if meta.get("kind") == "instructions" and meta.get("template") is not None:
        return check_template(meta["template"], "the data's template")
    return start_template
