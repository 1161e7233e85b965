"""autocompress: search structured pruning, quantization, split and adaptation policies that fit trained networks
to IoT devices.

Importing the package registers the Gymnasium environment ``AutoCompress/Compress-v0``.
"""

import gymnasium as _gym

from autocompress.errors import AutoCompressError, ConfigError, DataError, PolicyError

__version__ = "0.1.0"

if "AutoCompress/Compress-v0" not in _gym.registry:
    _gym.register(id="AutoCompress/Compress-v0", entry_point="autocompress.env.compress_env:AutoCompressEnv")

__all__ = ["AutoCompressError", "ConfigError", "DataError", "PolicyError", "__version__"]
