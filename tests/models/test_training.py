from pathlib import Path

import pytest
import torch

from autocompress.errors import ConfigError
from autocompress.models.training import Trainer, config_for


def test_digits_cnn_reaches_95_percent(digits, tmp_path: Path) -> None:
    trainer = Trainer.create(config_for("digits-cnn", "digits", epochs=12), tmp_path, digits)
    result = trainer.run()
    assert result["test_accuracy"] >= 0.95
    assert {"model.pt", "checkpoint.pt", "metrics.csv", "config.json", "result.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_resume_continues_exactly(digits, tmp_path: Path) -> None:
    config = config_for("digits-cnn", "digits", epochs=3)
    straight = Trainer.create(config, tmp_path / "a", digits)
    straight.run()
    interrupted = Trainer.create(config, tmp_path / "b", digits)
    assert interrupted.run(stop_after=1) == {"epochs": 1, "stopped": True}
    resumed = Trainer.resume(tmp_path / "b")
    assert resumed.epoch == 1
    resumed.run()
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 4


def test_an_epoch_logged_but_not_checkpointed_is_logged_once_after_resume(digits, tmp_path: Path) -> None:
    config = config_for("digits-cnn", "digits", epochs=3)
    Trainer.create(config, tmp_path, digits).run(stop_after=1)
    with (tmp_path / "metrics.csv").open("a") as handle:  # a kill after logging epoch 2, before its checkpoint
        handle.write("2,0.5,0.5,0.01,1.0\n")
    Trainer.resume(tmp_path).run()
    epochs = [line.split(",")[0] for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("epochs", 0, "epochs >= 1"), ("lr", -1.0, "lr > 0"), ("schedule", "step", "schedule must be one of")],
)
def test_bad_config_names_the_rule(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_for("digits-cnn", "digits", **{field: value})
