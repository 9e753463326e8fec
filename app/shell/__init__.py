"""The shell: the `sam-inspect` CLI and its subcommands, the line tool's entry point, the
desktop entry, paths, about information and the self-test.

May import: everything in app and sam_engine (nothing imports the shell).
"""
