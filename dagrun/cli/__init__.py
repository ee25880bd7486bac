"""The `dagrun` command line (click). Errors map to exit codes; no tracebacks for user errors."""
