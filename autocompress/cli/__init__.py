"""Command-line interface: ``autocompress VERB ...``."""

from autocompress.cli.app import main

__all__ = ["main"]
