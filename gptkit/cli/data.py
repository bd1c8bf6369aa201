"""`gptkit prepare instructions` and `gptkit prepare hf`: the data commands beyond plain text files.

Registered on cli/prepare.py's `prepare` group; each parses options, calls one library function and
prints the data folder on stdout (its meta.json with --json), like the other `prepare` commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.prepare import _report_prepared as _report, prepare_app
from gptkit.console import log as _log

INSTRUCTIONS_EPILOG = (
    "Examples:\n\n"
    "  gptkit prepare instructions tasks.jsonl --tokenizer out/ --out data/tasks\n\n"
    "  gptkit prepare instructions alpaca.jsonl --tokenizer gpt2 --template alpaca --block-size 512 --out data/alpaca\n\n"
    'Lines: {"prompt", "completion"}, {"messages": [{"role", "content"}, ...]} or {"instruction", "input", "output"}.'
)


@prepare_app.command("instructions", epilog=INSTRUCTIONS_EPILOG)
def prepare_instructions_cmd(
    jsonl: Path = typer.Argument(..., help="A JSONL file: one example per line (see the layouts below)."),
    tokenizer: str = typer.Option(
        ..., "--tokenizer", "-t", help="The model's tokenizer: its checkpoint (or run folder), a data folder, a saved tokenizer, "
        "a Hugging Face GPT-2 folder, or gpt2."
    ),
    out: Path = typer.Option(Path("data/instructions"), "--out", "-o", help="Data folder to write."),
    template: Optional[str] = typer.Option(
        None, "--template", help="Prompt template: plain (default: 'Question: ...\\nAnswer: ...\\n'), alpaca, a JSON/TOML file "
        "with system/user/assistant entries, or a one-line 'Q: {prompt}\\nA: {completion}\\n'."
    ),
    block_size: Optional[int] = typer.Option(
        None, "--block-size", min=1, help="Context length the examples must fit (default: the checkpoint's, else 1024)."
    ),
    too_long: str = typer.Option("skip", "--too-long", help="Examples longer than the context: skip (counted) | error."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the examples kept for validation (the last ones)."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Tokenize instruction examples for fine-tuning: the loss counts completion tokens only."""
    from gptkit.instructions import prepare_instructions

    meta = prepare_instructions(
        jsonl, out, tokenizer, template, block_size=block_size, val_fraction=val_fraction, on_too_long=too_long, log=_log
    )
    _report(meta, out, as_json)


HF_EPILOG = (
    "Examples:\n\n"
    "  gptkit prepare hf HuggingFaceFW/fineweb-edu --name sample-10BT --max-documents 100000 --out data/fineweb\n\n"
    "  gptkit prepare hf Skylion007/openwebtext --out data/owt\n\n"
    "  gptkit prepare hf json --data-files corpus.jsonl --out data/local"
)


@prepare_app.command("hf", epilog=HF_EPILOG)
def prepare_hf_cmd(
    dataset: str = typer.Argument(..., help="A Hugging Face dataset (owner/name), or a builder (json, parquet) with --data-files."),
    name: Optional[str] = typer.Option(None, "--name", help="The dataset's configuration (e.g. sample-10BT)."),
    split: str = typer.Option("train", "--split", help="The dataset split to read."),
    text_field: str = typer.Option("text", "--text-field", help="The field holding each row's text."),
    tokenizer: str = typer.Option("gpt2", "--tokenizer", "-t", help="gpt2, a checkpoint, a data folder, a HF GPT-2 folder, or char / bpe:N."),
    out: Path = typer.Option(Path("data/hf"), "--out", "-o", help="Data folder to write."),
    val_fraction: float = typer.Option(0.005, "--val-fraction", help="Share of the documents kept for validation (spread evenly)."),
    max_documents: Optional[int] = typer.Option(None, "--max-documents", min=1, help="Stop after this many rows (a trial run)."),
    data_files: list[str] = typer.Option([], "--data-files", help="Local files for a json/parquet/text builder (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the data folder's meta.json on stdout."),
) -> None:
    """Stream a Hugging Face dataset into token shards (needs the `datasets` extra). Flat memory."""
    from gptkit.hf_datasets import prepare_hf

    meta = prepare_hf(
        dataset, out, tokenizer, name=name, split=split, text_field=text_field, val_fraction=val_fraction,
        max_documents=max_documents, data_files=data_files or None, log=_log,
    )
    _report(meta, out, as_json)

