"""Command-line interface: thin wrappers over the library, one module per command group."""
