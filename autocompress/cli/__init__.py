"""Command-line interface: ``autocompress VERB ...``.

Start-up time is why the verb modules import the layers they drive inside their ``run`` functions (the one place in
the package where internal imports sit inside functions by design): ``autocompress --help``, a flag error or
``list`` answer in about 0.3 s instead of the 3-4 s that importing torch, gymnasium, SB3 and Optuna takes.
"""

from autocompress.cli.app import main

__all__ = ["main"]
