"""One module per CLI verb, each with `main(argv=None) -> int` (see brlm.cli.VERBS)."""
