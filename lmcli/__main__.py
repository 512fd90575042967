"""`python -m lmcli` runs the command line."""

from lmcli.cli import main

if __name__ == "__main__":
    main()
