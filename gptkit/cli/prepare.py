"""`gptkit prepare shakespeare|text`: raw text to the token shards that `train` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.app import app
from gptkit.console import CONTEXT, emit_json as _emit_json, log as _log

prepare_app = typer.Typer(
    help="Turn raw text into token shards that `train` reads.",
    epilog="Examples:\n\n  gptkit prepare shakespeare\n\n  gptkit prepare text notes/ --out data/notes",
    context_settings=CONTEXT,
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")

TOKENIZER_HELP = (
    "char (the corpus's characters; char:unk adds <unk>), bpe:N (gptkit's byte-level BPE with N ids), "
    "sp-bpe:N or sp-unigram:N (SentencePiece), a tiktoken encoding (gpt2, cl100k_base, o200k_base), or a PATH: "
    "a saved tokenizer, a data folder or a checkpoint whose tokenizer to reuse."
)


def _report_prepared(meta: dict, out: Path, as_json: bool) -> None:
    if as_json:
        _emit_json({"data": str(out), **meta})
    else:
        print(out)


@prepare_app.command(
    "shakespeare",
    epilog="Examples:\n\n"
    "  gptkit prepare shakespeare\n\n"
    "  gptkit prepare shakespeare --source tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare-gpt2",
)
def prepare_shakespeare_cmd(
    tokenizer: str = typer.Option("char", "--tokenizer", "-t", help=TOKENIZER_HELP),
    source: Optional[Path] = typer.Option(
        None, "--source", "-s", help="A local copy of tiny Shakespeare instead of downloading it (or set GPTKIT_SHAKESPEARE)."
    ),
    out: Path = typer.Option(Path("data/shakespeare"), "--out", "-o", help="Data folder to write."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the text kept for validation (the end)."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Download tiny Shakespeare (cached) and tokenize it. Prints the data folder on stdout."""
    from gptkit.prepare import prepare_shakespeare

    meta = prepare_shakespeare(out, tokenizer, source, val_fraction, log=_log)
    _report_prepared(meta, out, as_json)


@prepare_app.command(
    "text",
    epilog="Example:\n\n  gptkit prepare text notes/ book.txt --tokenizer gpt2 --out data/mine",
)
def prepare_text_cmd(
    paths: list[Path] = typer.Argument(..., help="Text files or folders (searched recursively); one document per file."),
    tokenizer: str = typer.Option("char", "--tokenizer", "-t", help=TOKENIZER_HELP),
    out: Path = typer.Option(Path("data/text"), "--out", "-o", help="Data folder to write."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the text kept for validation (the end)."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Tokenize your own UTF-8 text files. Prints the data folder on stdout."""
    from gptkit.prepare import prepare_text

    meta = prepare_text(paths, out, tokenizer, val_fraction, log=_log)
    _report_prepared(meta, out, as_json)
