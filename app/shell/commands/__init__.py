"""One module per `sam-inspect` subcommand; each has add_parser(subparsers) and run(args) -> int."""
