"""`outbox_group_commit_ms`: read from TOML/env, bounded like the outbox itself, and given to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config
from edge.errors import ConfigError
from edge.outbox import MAX_GROUP_COMMIT_MS
from edge.publisher import Publisher


def test_default_and_environment(tmp_path: Path) -> None:
    assert load_config(env={"XDG_STATE_HOME": str(tmp_path)}).outbox_group_commit_ms == 2.0
    cfg = load_config(env={"XDG_STATE_HOME": str(tmp_path), "RAMAN_EDGE_OUTBOX_GROUP_COMMIT_MS": "0"})
    assert cfg.outbox_group_commit_ms == 0.0


@pytest.mark.parametrize("bad", [-1.0, MAX_GROUP_COMMIT_MS + 0.5])
def test_out_of_range_is_a_config_error(tmp_path: Path, bad: float) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text(f"outbox_group_commit_ms = {bad}\n")
    with pytest.raises(ConfigError, match="outbox_group_commit_ms must be within 0-5"):
        load_config(toml, env={"XDG_STATE_HOME": str(tmp_path)})


@pytest.mark.parametrize("ms", [0.0, 4.0])
def test_the_publisher_opens_its_outbox_with_it(tmp_path: Path, ms: float) -> None:
    cfg = load_config(
        env={"XDG_STATE_HOME": str(tmp_path)},
        overrides={"outbox_path": tmp_path / "outbox.sqlite", "outbox_group_commit_ms": ms},
    )
    pub = Publisher.from_config(cfg)
    try:
        assert pub._outbox.group_commit_s == pytest.approx(ms / 1000.0)
    finally:
        pub.close()
