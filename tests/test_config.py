import sys
from dataclasses import asdict

import pytest

from gptkit.config import DEFAULT_PRESET, PRESETS, TrainConfig, apply_settings, resolve_config, to_toml
from gptkit.errors import UsageError
from gptkit.model import ModelConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_preset():
    model, train = resolve_config(None)
    assert model == ModelConfig() and train == TrainConfig()


def test_layering_preset_then_toml_then_overrides(tmp_path):
    config = write(tmp_path, "[model]\nn_layer = 3\nn_embd = 96\n[train]\nlearning_rate = 5e-4\nmax_iters = 700\n")
    model, train = resolve_config(
        "shakespeare-char-cpu", config, model_overrides={"n_embd": 64}, train_overrides={"max_iters": 10}
    )
    # from the preset, untouched by later layers
    assert (model.n_head, model.block_size, model.bias, train.batch_size) == (4, 64, False, 12)
    # TOML over the preset
    assert model.n_layer == 3 and train.learning_rate == 5e-4
    # options over TOML
    assert model.n_embd == 64 and train.max_iters == 10
    # defaults where no layer says anything
    assert train.grad_clip == TrainConfig().grad_clip and train.data == "data/shakespeare"


def test_int_is_accepted_for_float_settings(tmp_path):
    model, train = resolve_config(None, write(tmp_path, "[train]\nlearning_rate = 1\n[model]\ndropout = 0\n"))
    assert train.learning_rate == 1.0 and isinstance(train.learning_rate, float)
    assert isinstance(model.dropout, float)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\nn_layers = 3\n", "unknown setting\\(s\\) n_layers"),
        ("[train]\nlr = 1e-3\nfoo = 1\n", "unknown setting\\(s\\) foo, lr"),
        ("[optimizer]\nlr = 1\n", "unknown table\\(s\\) optimizer"),
        ("max_iters = 3\n", "unknown table\\(s\\) max_iters"),
        ("[model]\nn_layer = 2.5\n", "n_layer should be an? int, got 2.5"),
        ("[model]\nn_layer = true\n", "n_layer should be an? int, got True"),
        ("[train]\nlearning_rate = \"fast\"\n", "learning_rate should be a float, got 'fast'"),
        ("[train]\ncompile = 1\n", "compile should be a bool, got 1"),
        ("[train]\ndevice = 0\n", "device should be a str, got 0"),
        ("[model\nn_layer = 2\n", "is not valid TOML"),
        ("[train]\nmax_iters = 0\n", "invalid configuration: train.max_iters must be at least 1"),
        ("[model]\nn_embd = 100\nn_head = 3\n", "model.n_embd \\(100\\) must be divisible by model.n_head \\(3\\)"),
    ],
)
def test_bad_toml_is_a_usage_error(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        resolve_config(None, write(tmp_path, text))


def test_unknown_setting_hint_lists_known_ones(tmp_path):
    with pytest.raises(UsageError) as info:
        resolve_config(None, write(tmp_path, "[train]\nmax_iter = 3\n"))
    assert "max_iters" in info.value.hint


def test_missing_and_non_utf8_config_file(tmp_path):
    with pytest.raises(UsageError, match="config file .*nope.toml does not exist"):
        resolve_config(None, tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[train]\ndevice = '\xff'\n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        resolve_config(None, bad)


def test_all_problems_are_listed_at_once():
    with pytest.raises(UsageError) as info:
        resolve_config(None, None, {"n_layer": 0}, {"batch_size": 0, "learning_rate": -1.0, "beta2": 1.0, "dtype": "fp8"})
    message = info.value.message
    for part in ("model.n_layer must be at least 1", "train.batch_size must be at least 1",
                 "train.learning_rate must be positive", "train.beta2 must be in [0, 1)", "train.dtype must be auto"):
        assert part in message


def test_unknown_preset():
    with pytest.raises(UsageError, match="unknown preset 'tiny'") as info:
        resolve_config("tiny")
    assert "shakespeare-char-cpu" in info.value.hint and "shakespeare-char" in info.value.hint


def test_override_errors():
    with pytest.raises(UsageError, match="options: unknown setting\\(s\\) nlayer"):
        resolve_config(None, None, {"nlayer": 2})
    with pytest.raises(UsageError, match="options: max_iters should be an? int"):
        resolve_config(None, None, None, {"max_iters": "10"})


def test_vocab_size_is_not_validated_before_the_data_sets_it():
    model, _ = resolve_config(None, None, {"vocab_size": 0})
    assert model.vocab_size == 0


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_validates_and_round_trips_through_toml(tmp_path, preset):
    model, train = resolve_config(preset)
    assert model.validate() == [] and train.validate() == []
    text = to_toml(model, train)
    data = tomllib.loads(text)
    assert data == {"model": asdict(model), "train": asdict(train)}
    # ...and the file resolves back to the same configs with no preset
    assert resolve_config(None, write(tmp_path, text)) == (model, train)


def test_to_toml_escapes_strings(tmp_path):
    model, train = resolve_config(None, None, None, {"data": 'C:\\data\\"quoted" dir', "out": "runs/ünïcode"})
    data = tomllib.loads(to_toml(model, train))
    assert data["train"]["data"] == 'C:\\data\\"quoted" dir' and data["train"]["out"] == "runs/ünïcode"


def test_shakespeare_char_cpu_matches_nanogpt():
    assert DEFAULT_PRESET == "shakespeare-char-cpu"
    model, train = resolve_config("shakespeare-char-cpu")
    assert (model.n_layer, model.n_head, model.n_embd, model.block_size, model.dropout) == (4, 4, 128, 64, 0.0)
    assert (train.batch_size, train.max_iters, train.learning_rate) == (12, 2000, 1e-3)
    assert train.lr_decay_iters == 2000 and train.min_lr == 1e-4


def test_shakespeare_char_matches_nanogpt_gpu_config():
    model, train = resolve_config("shakespeare-char")
    assert (model.n_layer, model.n_head, model.n_embd, model.block_size, model.dropout) == (6, 6, 384, 256, 0.2)
    assert (train.batch_size, train.max_iters, train.learning_rate, train.min_lr) == (64, 5000, 1e-3, 1e-4)
    assert (train.warmup_iters, train.beta2, train.eval_iters) == (100, 0.99, 200)


def test_apply_settings_returns_a_copy():
    base = TrainConfig()
    changed = apply_settings(base, {"seed": 7}, "test")
    assert changed.seed == 7 and base.seed == 1337


def test_train_help_names_every_preset():
    """cli.PRESET_NAMES is written out by hand (importing config would import torch for --help)."""
    from gptkit.cli import PRESET_NAMES
    from gptkit.config import PRESETS

    assert sorted(name.split(" (")[0] for name in PRESET_NAMES.split(", ")) == sorted(PRESETS)


def test_vocab_multiple_from_presets_toml_and_options(tmp_path):
    model, _ = resolve_config("gpt2-124m")
    assert (model.vocab_size, model.vocab_multiple, model.padded_vocab_size) == (50257, 64, 50304)  # as nanoGPT
    for name in PRESETS:
        if "char" in name:  # a 65-symbol vocabulary padded to 128 would double the output layer
            assert resolve_config(name)[0].vocab_multiple == 1
    model, _ = resolve_config("shakespeare-char", write(tmp_path, "[model]\nvocab_multiple = 8\n"))
    assert model.vocab_multiple == 8 and "vocab_multiple = 8" in to_toml(*resolve_config(None, None, {"vocab_multiple": 8}))
    with pytest.raises(UsageError, match=r"model.vocab_multiple must be at least 1 \(got 0\)"):
        resolve_config(None, None, {"vocab_multiple": 0})
