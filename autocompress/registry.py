"""Names the package registers with other libraries when it is imported: the Gymnasium environment id."""

from __future__ import annotations

ENV_ID = "AutoCompress/Compress-v0"


def register_env() -> None:
    """Register ``AutoCompress/Compress-v0`` with Gymnasium (once); nothing to do where Gymnasium is absent.

    A device installs the runtime alone (numpy and onnxruntime, see README "On the device"), so the package's import
    must not need Gymnasium: it is imported here, when present, instead of at module level.
    """
    try:
        import gymnasium as gym
    except ModuleNotFoundError:
        return
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="autocompress.env.compress_env:AutoCompressEnv")
