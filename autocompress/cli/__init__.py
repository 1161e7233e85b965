"""Command-line interface: ``autocompress VERB ...``.

Start-up time is why the verb modules import the layers they drive inside their ``run`` functions (the one place in
the package where internal imports sit inside functions by design): ``autocompress --help``, a flag error or
``list`` answer in a fraction of a second, without the seconds that importing torch, gymnasium, SB3 and Optuna
takes.
"""

from autocompress.cli.app import main

__all__ = ["main"]
