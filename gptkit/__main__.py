"""`python -m gptkit` runs the same CLI as the `gptkit` console script."""

from gptkit.cli import main

if __name__ == "__main__":
    main()
