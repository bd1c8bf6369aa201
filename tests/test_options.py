"""Options generated from the config fields: every setting has its flag, its help shows its choices, and
validate() checks the same choices."""

from __future__ import annotations

import re
from dataclasses import fields, replace

import pytest
import typer

from gptkit.cli import app
from gptkit.config import ModelConfig, TrainConfig, choices_of, resolve_config
from gptkit.options import flag_declarations, option_fields, split_overrides


def train_command():
    group = typer.main.get_command(app)
    return group.commands["train"]


def test_every_config_field_has_a_flag_with_help():
    params = {p.name: p for p in train_command().params}
    for cls in (ModelConfig, TrainConfig):
        for f in fields(cls):
            if f.metadata.get("derived"):  # vocab_size: set from the data's tokenizer
                assert f.name not in params
                continue
            assert f.name in params, f"{cls.__name__}.{f.name} has no option"
            param = params[f.name]
            assert param.help and f.metadata["help"].split("(")[0].strip() in param.help.replace("\\[", "[")
            flags = param.opts + param.secondary_opts
            assert "--" + f.name.replace("_", "-") in flags or f.name == "learning_rate", flags


def test_the_old_flags_and_aliases_still_exist():
    flags = {flag for p in train_command().params for flag in p.opts + p.secondary_opts}
    for flag in (
        "--lr", "--learning-rate", "-d", "-o", "-p", "-c", "--compile", "--no-compile", "--bias", "--no-bias",
        "--tie-embeddings", "--untie-embeddings", "--tensorboard", "--no-tensorboard", "--resume", "--resume-from",
        "--overwrite", "--print-config", "--json",
        # the settings that had no flag before the options were generated
        "--muon-lr", "--muon-momentum", "--cooldown-frac",
    ):
        assert flag in flags, flag


def test_train_help_shows_every_fields_choices(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option, so a list of choices is not wrapped
    r = run_cli("train", "--help")
    assert r.code == 0
    text = re.sub(r"\s+", " ", r.stdout.replace("│", " "))
    for _table, f in option_fields():
        choices = f.metadata.get("choices")
        if choices:
            assert all(choice in text for choice in choices), f.name
            if "/" not in flag_declarations(f)[0]:
                assert " | ".join(choices) in text, f.name
    assert "cosine" not in text.split("--min-lr")[1].split("--warmup-iters")[0]  # four schedules, not one


@pytest.mark.parametrize("table, cls", [("model", ModelConfig), ("train", TrainConfig)])
def test_validate_checks_the_choices_written_in_the_metadata(table, cls):
    for f in fields(cls):
        choices = choices_of(cls, f.name)
        if not choices:
            continue
        problems = replace(cls(), **{f.name: "nope"}).validate()
        [problem] = [p for p in problems if p.startswith(f"{table}.{f.name} ")]
        assert "'nope'" in problem and all(c in problem for c in choices)
        for choice in choices:  # and every choice is valid
            assert not [p for p in replace(cls(), **{f.name: choice}).validate() if f"{table}.{f.name} " in p]


def test_given_options_become_the_overrides_of_their_table():
    model, train = split_overrides({"n_layer": 3, "learning_rate": 0.5, "compile": False, "seed": None, "data": "d"})
    assert model == {"n_layer": 3} and train == {"learning_rate": 0.5, "compile": False, "data": "d"}
    _, cfg = resolve_config(None, None, model, train)
    assert cfg.compile == "false"


def test_muon_and_wsd_settings_reach_the_config_from_the_command_line(run_cli):
    r = run_cli("train", "--print-config", "--optimizer", "muon", "--muon-lr", "0.05", "--muon-momentum", "0.9",
                "--lr-schedule", "wsd", "--cooldown-frac", "0.5", "--no-compile", "--untie-embeddings")
    assert r.code == 0, r.output
    for line in ('optimizer = "muon"', "muon_lr = 0.05", "muon_momentum = 0.9", 'lr_schedule = "wsd"',
                 "cooldown_frac = 0.5", 'compile = "false"', "tie_embeddings = false"):
        assert line in r.stdout.splitlines(), line
