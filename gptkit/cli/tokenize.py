"""`gptkit tokenize train|encode|decode|inspect`: the tokenizer commands, registered with the root app.

Same conventions as every command (see cli/__init__.py): ids and text on stdout, messages on stderr, one
`Error:` line on a mistake. Made for pipes: `encode | decode` gives back the input byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gptkit.cli.app import app
from gptkit.console import CONTEXT, emit_json as _emit_json, log as _log
from gptkit.errors import UsageError

tokenize_app = typer.Typer(
    help="Train, apply and inspect tokenizers. Made for pipes: ids on stdout, text back with decode.",
    context_settings=CONTEXT,
    no_args_is_help=True,
)
app.add_typer(tokenize_app, name="tokenize")

TOKENIZER_REF_HELP = (
    "A folder from `tokenize train`, a data folder, a checkpoint (or run folder), a Hugging Face GPT-2 folder, or a tiktoken encoding "
    "(gpt2, cl100k_base, o200k_base)."
)
FORMAT_HELP = "lines (space-separated ids, one line per input line) | jsonl | bin (raw uint16/uint32) | npy."


def _binary_input(path: str):
    if path == "-":
        return sys.stdin.buffer
    if not Path(path).is_file():
        raise UsageError(f"{path} is not a file", hint="pass a file, or - (the default) to read stdin")
    return open(path, "rb")


def _binary_output(fmt: str):
    if fmt in ("bin", "npy") and sys.stdout.isatty():
        raise UsageError(f"--format {fmt} writes binary data; redirect it to a file or a pipe")
    return sys.stdout.buffer


@tokenize_app.command(
    "train",
    epilog="Examples:\n\n"
    "  gptkit tokenize train --kind bpe --vocab-size 4096 input.txt --out tok/\n\n"
    "  gptkit tokenize train --kind sp-unigram --vocab-size 8000 corpus/ --out tok-sp/",
)
def tokenize_train_cmd(
    files: list[Path] = typer.Argument(..., help="UTF-8 text files or folders (searched recursively) to learn from."),
    kind: str = typer.Option("bpe", "--kind", "-k", help="bpe | sp-bpe | sp-unigram | sentencepiece (= sp-unigram) | char."),
    vocab_size: int = typer.Option(4096, "--vocab-size", "-v", min=1, help="Ids in the vocabulary, specials included (not for char)."),
    out: Path = typer.Option(Path("tok"), "--out", "-o", help="Folder to write tokenizer.json into."),
    pattern: str = typer.Option("gpt4", "--pattern", help="bpe: how text is split before merging: gpt4, gpt4o, gpt2 or a regex."),
    special: list[str] = typer.Option([], "--special", help="An extra special token (repeatable); <|endoftext|> is always one."),
    unk: bool = typer.Option(False, "--unk", help="char: add an <unk> id for characters the corpus never showed."),
    as_json: bool = typer.Option(False, "--json", help="Print the tokenizer's summary as JSON."),
) -> None:
    """Learn a tokenizer from text files and save it. Prints its folder on stdout."""
    from gptkit.tokenization import train_from_files
    from gptkit.tokenizers import ENDOFTEXT

    specials = [ENDOFTEXT] + [s for s in special if s != ENDOFTEXT]
    tokenizer = train_from_files(kind, files, out, vocab_size, pattern=pattern, special_tokens=specials, unk=unk, log=_log)
    if as_json:
        _emit_json({"tokenizer": str(out), "name": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                    "special_tokens": tokenizer.special_tokens})
    else:
        print(out)


@tokenize_app.command(
    "encode",
    epilog="Examples:\n\n"
    "  echo 'Hello, world' | gptkit tokenize encode --tokenizer tok/\n\n"
    "  gptkit tokenize encode --tokenizer data/shakespeare new.txt --format bin > new.bin\n\n"
    "  cat a.txt | gptkit tokenize encode -t tok/ | gptkit tokenize decode -t tok/ | cmp - a.txt",
)
def tokenize_encode_cmd(
    input: str = typer.Argument("-", help="UTF-8 text file, or - for stdin."),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help=TOKENIZER_REF_HELP),
    fmt: str = typer.Option("lines", "--format", "-f", help=FORMAT_HELP),
    allow_special: bool = typer.Option(
        False, "--allow-special", help="Turn special-token strings in the text (<|endoftext|>) into their ids; else they are text."
    ),
) -> None:
    """Text to token ids, on stdout."""
    from gptkit.tokenization import encode_stream

    sink = _binary_output(fmt)
    with _binary_input(input) as source:
        encode_stream(tokenizer, source, sink, fmt, "all" if allow_special else ())
    sink.flush()


@tokenize_app.command(
    "decode",
    epilog="Examples:\n\n"
    "  echo '15496 11 995' | gptkit tokenize decode --tokenizer gpt2\n\n"
    "  gptkit tokenize decode --tokenizer tok/ --format bin new.bin",
)
def tokenize_decode_cmd(
    input: str = typer.Argument("-", help="Ids as `encode` wrote them: a file, or - for stdin."),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help=TOKENIZER_REF_HELP),
    fmt: str = typer.Option("lines", "--format", "-f", help=FORMAT_HELP),
) -> None:
    """Token ids back to text, on stdout (byte for byte what was encoded, for byte-level tokenizers)."""
    from gptkit.tokenization import decode_stream

    with _binary_input(input) as source:
        decode_stream(tokenizer, source, sys.stdout.buffer, fmt)
    sys.stdout.buffer.flush()


@tokenize_app.command(
    "inspect",
    epilog="Examples:\n\n"
    "  gptkit tokenize inspect --tokenizer tok/ 'The quick brown fox'\n\n"
    "  gptkit tokenize inspect --tokenizer data/shakespeare input.txt --max-tokens 60",
)
def tokenize_inspect_cmd(
    text: Optional[str] = typer.Argument(None, help="Text to tokenize, or a file holding it.  [default: stdin when piped]"),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help=TOKENIZER_REF_HELP),
    max_tokens: int = typer.Option(200, "--max-tokens", min=0, help="Show at most this many tokens of the text."),
    top: int = typer.Option(10, "--top", min=0, help="How many first-learned and longest tokens to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Vocabulary, special tokens, first merges, longest tokens; on a text: compression and its split
    into coloured tokens."""
    from gptkit.tokenization import inspect_tokenizer

    if text is not None and Path(text).is_file():
        from gptkit.sources import read_text_file

        text = read_text_file(text)
    elif text is None and not sys.stdin.isatty():
        text = sys.stdin.read()
    report = inspect_tokenizer(tokenizer, text, max_tokens, top)
    if as_json:
        _emit_json(report)
    else:
        _render_inspect(report, Console(soft_wrap=True))


def _quoted(token: str) -> str:
    """A token in quotes, so leading and trailing spaces show."""
    return f'"{token}"' if "'" in token and '"' not in token else f"'{token}'"


TOKEN_COLOURS = ("black on cyan", "black on green", "black on yellow", "black on magenta")  # standard colours: distinct in any terminal


def _render_inspect(report: dict, out: Console) -> None:
    from rich.text import Text

    extra = [report.get("pattern") and f"pattern {report['pattern']}", report["byte_level"] and "byte-level"]
    out.print(f"[bold]{report['name']}[/]  ({', '.join([report['kind']] + [e for e in extra if e])})", highlight=False)
    out.print(f"vocabulary: {report['vocab_size']:,} ids", highlight=False)
    specials = ", ".join(f"{name} = {i}" for name, i in report["special_tokens"].items()) or "none"
    out.print(f"special tokens: {specials}", markup=False, highlight=False)
    if report["learned"]:
        out.print(f"first learned ({report['learned_order']}):")
        for t in report["learned"]:
            merge = f"   = {_quoted(t['merge'][0])} + {_quoted(t['merge'][1])}" if "merge" in t else ""
            out.print(f"  {t['id']:>7}  {_quoted(t['token'])}{merge}", markup=False, highlight=False)
    if report["longest"]:
        out.print("longest tokens:")
        for t in report["longest"]:
            out.print(f"  {t['id']:>7}  {t['bytes']:>3} bytes  {_quoted(t['token'])}", markup=False, highlight=False)
    info = report.get("text")
    if info is None:
        return
    out.print(
        f"text: {info['bytes']:,} bytes, {info['chars']:,} characters -> {info['tokens']:,} tokens: "
        f"{info['bytes_per_token']:.2f} bytes/token, {info['chars_per_token']:.2f} characters/token"
        + ("" if info["round_trip"] else "  (decoding does not give the text back exactly)"),
        highlight=False,
    )
    shown = info["shown"]
    out.print(f"its first {len(shown):,} tokens:" if len(shown) < info["tokens"] else "its tokens:")
    plain = out.color_system is None  # NO_COLOR or not a terminal: mark the boundaries with |
    split = Text()
    for n, t in enumerate(shown):
        piece = t["token"].replace("\t", "⇥").replace("\r", "␍").replace("\n", "↵\n")
        if plain:
            split.append(("|" if n else "") + piece)
        else:
            split.append(piece, style=TOKEN_COLOURS[n % len(TOKEN_COLOURS)])
    out.print(split)
