"""How `--help` reads: plain metavars, text that wraps rather than being cut, brackets that stay.

typer draws the help with Rich, and three of its habits trip a newcomer:

    its type labels      `<bool>` beside a flag, `<list[Path]>`, a usage line `{paths}...`
                         ->  nothing beside a flag; INT, FLOAT, TEXT, PATH, a|b|c; `PATHS...`
    Rich's markup        `pip install 'gptkit[report]'` prints as `gptkit`: `[report]` is read as a style
                         ->  every help text is escaped, so brackets print as written
    narrow columns       a word longer than its column ends in `…` at 80 columns
                         ->  cells fold long words onto the next line instead

`humanize(command)` fixes the first two on the click command tree that typer builds from the app; the
third is a setting of the cells typer draws (`fold_long_words()`). `install()` makes that happen the
first time a help is drawn, so a command that draws none never imports typer's Rich layer (~0.2 s).
"""

from __future__ import annotations

import re

_TYPE_NAMES = {"integer": "INT", "float": "FLOAT", "text": "TEXT", "boolean": "BOOL", "path": "PATH", "file": "FILE"}
_UNESCAPED_BRACKET = re.compile(r"(?<!\\)\[")


def escape_markup(text: str | None) -> str | None:
    """`[x]` -> `\\[x]` for Rich (brackets already escaped stay as they are)."""
    return None if text is None else _UNESCAPED_BRACKET.sub(r"\\[", text)


def _metavar(param) -> str:
    """INT, FLOAT, TEXT, PATH or a|b|c, from click's type (older typer) or typer's own type descriptor."""
    desc = getattr(param, "type_descriptor", None)
    if desc is not None:
        if desc.is_choice and desc.choices:
            return "|".join(str(c) for c in desc.choices)
        if desc.is_path or desc.is_file:
            return "PATH"
        element = desc.annotation.__args__[0] if desc.is_list and getattr(desc.annotation, "__args__", None) else desc.annotation
        return {int: "INT", float: "FLOAT", str: "TEXT"}.get(element, "PATH" if "Path" in str(element) else "VALUE")
    choices = getattr(param.type, "choices", None)
    if choices:
        return "|".join(str(c) for c in choices)
    return _TYPE_NAMES.get(param.type.name, param.type.name.upper())


def _humanize_param(param) -> None:
    # Duck-typed: newer typer releases carry their own copy of click, whose classes are not click's.
    if param.param_type_name == "option":
        param.help = escape_markup(param.help)
        if param.is_flag or param.count:
            param.metavar = ""  # a flag takes no value: nothing to show
        elif param.metavar is None:
            param.metavar = _metavar(param)
    elif param.param_type_name == "argument" and param.metavar is None:
        if hasattr(param, "help"):
            param.help = escape_markup(param.help)
        name = (param.name or "value").upper()
        param.metavar = f"{name}..." if param.nargs != 1 else name


def humanize(command):
    """Plain metavars and escaped help texts for `command` and every command under it."""
    command.help = escape_markup(command.help)
    command.epilog = escape_markup(command.epilog)
    for param in command.params:
        _humanize_param(param)
    for sub in getattr(command, "commands", {}).values():
        humanize(sub)
    return command


def _usage_name(self) -> str:
    """The usage line's `PATHS...` (required) or `[PATHS]...`, instead of typer's `{paths}...`."""
    name = self.metavar or (self.name or "value").upper()
    return name if self.required else f"[{name}]"


def _folding(highlighter):
    """The same highlighter, whose texts fold a long word instead of cutting it."""
    base = type(highlighter)

    def highlight(self, text):
        base.highlight(self, text)
        text.overflow = "fold"

    return type(f"Folding{base.__name__}", (base,), {"highlight": highlight})()


def fold_long_words() -> None:
    """Make the cells of typer's option tables fold a long word (a path, a long flag) onto the next line
    instead of cutting it with `…`, and use the plain usage names above."""
    from typer import core, rich_utils

    if getattr(rich_utils, "_gptkit_folds", False):
        return

    for name in ("highlighter", "negative_highlighter", "types_highlighter"):
        original = getattr(rich_utils, name, None)
        if original is not None:
            setattr(rich_utils, name, _folding(original))
    parameter_help = getattr(rich_utils, "_get_parameter_help", None)
    if parameter_help is not None:

        def folded_help(*args, **kwargs):
            text = parameter_help(*args, **kwargs)
            if hasattr(text, "overflow"):
                text.overflow = "fold"
            else:  # a group of texts (help, then the default)
                for part in getattr(text, "renderables", ()):
                    if hasattr(part, "overflow"):
                        part.overflow = "fold"
            return text

        rich_utils._get_parameter_help = folded_help
    if hasattr(core, "TyperArgument") and hasattr(core.TyperArgument, "_usage_display_name"):
        core.TyperArgument._usage_display_name = _usage_name
        core.TyperArgument.display_type_rich = lambda self, ctx: _metavar(self) + ("..." if self.nargs != 1 else "")
    if hasattr(core, "TyperOption"):
        option_type = core.TyperOption.display_type_rich

        def flag_type(self, ctx):  # --help, --version and every other flag: no `<bool>`
            return "" if self.is_flag else option_type(self, ctx)

        core.TyperOption.display_type_rich = flag_type
    rich_utils._gptkit_folds = True


def install() -> None:
    """Apply fold_long_words() when the first help is drawn (cheap to call: it only wraps two methods)."""
    from typer import core

    for cls in (core.TyperCommand, core.TyperGroup):
        original = cls.format_help
        if getattr(original, "_gptkit", False):
            continue

        def format_help(self, ctx, formatter, _original=original):
            fold_long_words()
            return _original(self, ctx, formatter)

        format_help._gptkit = True
        cls.format_help = format_help
