"""Names the package registers with other libraries when it is imported: the Gymnasium environment id."""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "AutoCompress/Compress-v0"


def register_env() -> None:
    """Register ``AutoCompress/Compress-v0`` with Gymnasium (once)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="autocompress.env.compress_env:AutoCompressEnv")
