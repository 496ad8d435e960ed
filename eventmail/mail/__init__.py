"""The mail layer: the operations that change mail state, between the protocols (and the CLI) and the store."""
