"""Command-line options generated from the config dataclasses, so each setting is described once.

Every field of ModelConfig and TrainConfig (config.py) carries its help, choices, flags and help panel
in its metadata (`config.option`). `config_parameters()` turns each field into a typer option whose
default is None ("not given"), so that a command can tell the options typed on the command line from
the layers below them (preset, TOML file):

    n_layer: int = option(12, "Transformer blocks.", panel="Model")
        ->  --n-layer INTEGER   Transformer blocks.  [default: 12]

`with_config_options(function)` appends these parameters to a command's own signature (typer reads a
function's `__signature__` and `__annotations__`), and `split_overrides(values)` sorts the given ones
back into the model and train dicts that `config.resolve_config` takes.

Torch-free, like config.py: `gptkit train --help` imports neither.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, Field, fields
from typing import Callable, Optional

import typer

from gptkit.config import PRESETS, ModelConfig, TrainConfig

CONFIG_CLASSES = {"model": ModelConfig, "train": TrainConfig}


def option_fields() -> list[tuple[str, Field]]:
    """(table, field) of every setting that has a command-line option: all but the derived ones."""
    return [
        (table, f) for table, cls in CONFIG_CLASSES.items() for f in fields(cls) if not f.metadata.get("derived")
    ]


def flag_declarations(f: Field) -> tuple[str, ...]:
    """The option's names: from the metadata, else --field-name (--name/--no-name for a boolean)."""
    if f.metadata.get("flags"):
        return tuple(f.metadata["flags"])
    flag = "--" + f.name.replace("_", "-")
    return (f"{flag}/--no-{flag[2:]}",) if f.type in (bool, "bool") else (flag,)


def _python_type(f: Field, declarations: tuple[str, ...]) -> type:
    if any("/" in d for d in declarations):  # a --x/--no-x pair is a boolean, even for "auto" | "true" | "false"
        return bool
    return {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, f.type)


def help_text(f: Field) -> str:
    """The field's help, its choices, and its default (which a preset may replace)."""
    text = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    if choices and not any("/" in d for d in flag_declarations(f)):  # a --x/--no-x pair says them itself
        text += f"  One of: {' | '.join(choices)}."
    by_preset = any(f.name in p.model or f.name in p.train for p in PRESETS.values())
    default = f.default if f.default is not MISSING else None
    text += f"  [default: {default}]" if not by_preset else f"  [default: the preset's, else {default}]"
    return text.replace("[", "\\[")  # rich markup: "[default: 3]" and "[model]" are text


def config_parameters() -> list[inspect.Parameter]:
    """One keyword-only typer parameter per setting, named after its field (fields are unique across tables)."""
    parameters = []
    for _table, f in option_fields():
        declarations = flag_declarations(f)
        kind = _python_type(f, declarations)
        info = typer.Option(None, *declarations, help=help_text(f), rich_help_panel=f.metadata.get("panel"))
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=Optional[kind]))
    return parameters


def with_config_options(function: Callable) -> Callable:
    """Give `function` (a command taking **settings) one option per config field, after its own options.

    typer builds the command from the signature, so setting `__signature__` (and the annotations that
    typer resolves types from) is all it takes; the function receives the settings as keyword arguments."""
    own = inspect.signature(function)
    kept = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = config_parameters()
    clash = {p.name for p in kept} & {p.name for p in added}
    assert not clash, f"command options shadow config fields: {clash}"
    function.__signature__ = own.replace(parameters=kept + added)
    function.__annotations__ = {
        **{p.name: p.annotation for p in kept if p.annotation is not inspect.Parameter.empty},
        **{p.name: p.annotation for p in added},
    }
    return function


def split_overrides(values: dict) -> tuple[dict, dict]:
    """The settings given on the command line (not None), as (model overrides, train overrides)."""
    tables: dict[str, dict] = {"model": {}, "train": {}}
    for table, f in option_fields():
        value = values.get(f.name)
        if value is not None:
            tables[table][f.name] = str(value) if f.type == "str" and not isinstance(value, bool) else value
    return tables["model"], tables["train"]
