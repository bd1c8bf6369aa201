"""`gptkit prepare shakespeare|text|verify`: raw text to the token shards that `train` reads, and their check.
(`prepare instructions` and `prepare hf` are in cli/data.py.)"""

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
    "a saved tokenizer, a data folder, a checkpoint or a Hugging Face GPT-2 folder whose tokenizer to reuse."
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
    paths: list[Path] = typer.Argument(
        ..., help="Text files or folders (searched recursively); one document per file, or per row of a .jsonl / .parquet file."
    ),
    tokenizer: str = typer.Option("char", "--tokenizer", "-t", help=TOKENIZER_HELP),
    out: Path = typer.Option(Path("data/text"), "--out", "-o", help="Data folder to write."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the text kept for validation (the end)."),
    text_field: str = typer.Option("text", "--text-field", help="JSONL / Parquet files: the field holding each row's text."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Tokenize your own UTF-8 text files. Prints the data folder on stdout."""
    from gptkit.prepare import prepare_text

    meta = prepare_text(paths, out, tokenizer, val_fraction, log=_log, text_field=text_field)
    _report_prepared(meta, out, as_json)


@prepare_app.command(
    "verify",
    epilog="Example:\n\n  gptkit prepare verify data/shakespeare && echo intact",
)
def prepare_verify_cmd(
    data: Path = typer.Argument(..., help="A data folder written by `gptkit prepare`."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Check a data folder in one streaming pass: every shard's header, size and checksum, and every id
    inside the vocabulary. Names each damaged shard (exit 1); prints the folder when it is intact."""
    from gptkit.shards import verify_data_folder

    report = verify_data_folder(data)
    if as_json:
        _emit_json(report)
    else:
        checked = f"{report['checksums_verified']} checksum(s) verified" if report["checksums_verified"] else "no checksums recorded (prepared by an older gptkit)"
        _log(f"{data}: {report['shards']} shard(s), {report['tokens']:,} tokens, every id below {report['vocab_size']:,}; {checked}")
        print(data)
