"""gptkit: from raw text to a trained, sampled GPT, in code you can read.

The package is built in three floors (see docs/architecture.md):
  cli/ (one module per command)   parses options and renders results
  prepare / train / evaluate / generate   one plain function per stage
  model, shards, checkpoint, tokenizers, config, ...   the shared core
"""

__version__ = "0.1.0"
