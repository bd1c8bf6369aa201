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


def test_every_option_is_also_a_toml_setting(tmp_path, run_cli):
    """The same field, the same name in TOML: a config file setting every field to a non-default value
    gives the config that the options give."""
    changed = {
        "model": dict(vocab_multiple=8, block_size=32, n_layer=3, n_head=4, n_embd=64, dropout=0.1, bias=False,
                      position="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False, block="parallel",
                      n_kv_head=2, qk_norm=True, attention_window=8),
        "train": dict(data="d", out="o", device="cpu", dtype="float32", compile="false", seed=3, max_iters=9,
                      batch_size=5, grad_accum=2, learning_rate=0.01, min_lr=0.001, warmup_iters=2, lr_decay_iters=7,
                      weight_decay=0.2, beta1=0.8, beta2=0.9, grad_clip=0.5, optimizer="muon", muon_lr=0.03,
                      muon_momentum=0.9, lr_schedule="wsd", cooldown_frac=0.3, sampler="epoch", parallel="fsdp",
                      eval_interval=3, eval_iters=4, log_interval=2, tensorboard=True, keep_checkpoints=2,
                      on_bad_loss="stop", loss_spike_factor=4.0, max_bad_steps=5),
    }
    assert {f.name for _, f in option_fields()} == set(changed["model"]) | set(changed["train"])  # every field
    toml = tmp_path / "all.toml"

    def value(v):
        return str(v).lower() if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else repr(v)

    toml.write_text("".join(f"[{t}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in s.items()) for t, s in changed.items()))
    from_toml = run_cli("train", "--print-config", "--config", toml)
    argv = []
    for _table, f in option_fields():
        v = {**changed["model"], **changed["train"]}[f.name]
        declarations = flag_declarations(f)
        if "/" in declarations[0]:
            on, off = declarations[0].split("/")
            argv.append(on if v in (True, "true") else off)
        else:
            argv += [declarations[0], v]
    from_options = run_cli("train", "--print-config", *argv)
    assert from_toml.code == from_options.code == 0, from_toml.output + from_options.output
    assert from_toml.stdout == from_options.stdout
