"""`python -m dagrun` is the `dagrun` command."""

from dagrun.cli.main import main

if __name__ == "__main__":
    main()
