"""A DDPG agent resumed after a kill that fell between logging an episode and the next checkpoint is in step with
the log: the journal the checkpoint keeps adds that episode's transitions to the replay buffer and its decay to the
exploration noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompress.search import SearchCallback, SearchConfig, SearchJob
from autocompress.search.rl import PENDING, build_model, load_agent_state


class KillAfter(SearchCallback):
    """Stops the search right after episode ``index`` is logged (before the agent's next checkpoint)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def on_episode_end(self, episode) -> bool:  # type: ignore[no-untyped-def]
        if episode.index == self.index:
            raise KeyboardInterrupt
        return True


def test_a_resumed_agent_holds_every_logged_episode(tmp_path: Path) -> None:
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="ddpg", space="prune", episodes=6)
    job = SearchJob.create(config, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        job.run(callbacks=[KillAfter(3)])
    job.close()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / PENDING).is_file()
    resumed = SearchJob.resume(tmp_path / "run")
    context = resumed.context()
    assert context.episodes_done == 4  # episodes 0..3 logged
    model, noise = build_model(context, workers=1)
    episodes = load_agent_state(model, noise, checkpoints, logged=context.episodes_done)
    assert episodes == 4, "the agent is in step with the log"
    assert model.replay_buffer.pos == 4 * context.steps  # type: ignore[union-attr]
    saved = json.loads((checkpoints / "agent.json").read_text())["noise"]["episodes"]
    assert noise is not None and noise.episodes == saved + 1  # the logged episode's decay, as SB3 applies it
    without = load_agent_state(*build_model(context, workers=1), checkpoints)  # no log given: the checkpoint alone
    assert without == 3
    resumed.run()  # and the search finishes from there
    assert len(resumed.record.rows) == 6 and not (checkpoints / PENDING).exists()
