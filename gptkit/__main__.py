"""`python -m gptkit` runs the same CLI as the `gptkit` console script."""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while the CLI is still being imported: the same one line as later, not a traceback
        from gptkit.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    main()
