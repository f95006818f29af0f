"""The `sapwood` command line: one module per group of commands."""
