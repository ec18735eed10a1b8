"""Request parsing and rate limiting, sans I/O (edge/requests.py)."""

from __future__ import annotations

import json

import pytest

from edge.config import load_config
from edge.errors import ConfigError
from edge.requests import Request, RequestError, TokenBucket, command_of, error_response, ok_response, parse_request

ALLOWED = ("status", "replay")


def test_valid_replay_and_status_parse_and_keep_the_transaction() -> None:
    r = parse_request("replay", b'{"since_seq": 5, "until_seq": 9, "transaction": "t1"}', ALLOWED)
    assert r == Request("replay", {"since_seq": 5, "until_seq": 9}, "t1")
    assert parse_request("status", b"", ALLOWED) == Request("status", {}, None)


@pytest.mark.parametrize(
    ("command", "payload", "needle"),
    [
        ("replay", b"{not json", "malformed JSON"),
        ("replay", b"[1, 2]", "JSON object"),
        ("reboot", b"{}", "unknown command 'reboot'"),
        ("set", b'{"averages": 2}', "not enabled"),
        ("replay", b'{"since_seq": 1, "colour": "red"}', "'colour' was unexpected"),
        ("replay", b'{"since_seq": "one"}', "since_seq: 'one' is not of type 'integer'"),
        ("replay", b'{"since_seq": 0}', "since_seq: 0 is less than the minimum of 1"),
        ("replay", b"{}", "'since_seq' is a required property"),
        ("replay", b'{"since_seq": 9, "until_seq": 3}', "until_seq must be >= since_seq"),
    ],
)
def test_bad_requests_are_errors_that_name_the_problem(command: str, payload: bytes, needle: str) -> None:
    r = parse_request(command, payload, ALLOWED)
    assert isinstance(r, RequestError), r
    assert needle in r.error


def test_every_command_is_validated_before_it_is_carried_out() -> None:
    allowed = ("status", "replay", "model/activate", "acquire")
    bad = parse_request("model/activate", b'{"name": ""}', allowed)
    assert isinstance(bad, RequestError) and "non-empty" in bad.error
    r = parse_request("model/activate", b'{"name": "fmcnn-2", "transaction": 7}', allowed)
    assert not isinstance(r, RequestError) and r.args == {"name": "fmcnn-2"} and r.transaction == 7
    acq = parse_request("acquire", b'{"averages": 4, "count": 2}', allowed)
    assert not isinstance(acq, RequestError) and acq.args == {"averages": 4, "count": 2}
    lib = parse_request("library/add", b'{"mineral": "x", "shift_cm1": [1], "intensity": [1]}', ("library/add",))
    assert isinstance(lib, RequestError) and "too short" in lib.error


def test_responses_have_the_fixed_shape() -> None:
    assert json.loads(ok_response("a", {"x": 1})) == {"status": "ok", "transaction": "a", "data": {"x": 1}}
    assert json.loads(error_response(None, "no")) == {"status": "error", "error": "no"}


def test_command_of_multi_level_topics() -> None:
    assert command_of("raman/d/request/model/activate", "raman/d/request/") == "model/activate"
    assert command_of("raman/other/request/status", "raman/d/request/") is None


def test_token_bucket_allows_burst_then_rate() -> None:
    now = [0.0]
    b = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back at 2/s
    assert [b.take(), b.take()] == [True, False]


def test_allow_requests_config_from_toml_env_and_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert load_config(None, env={}).allow_requests == ("status", "replay")
    f = tmp_path / "e.toml"
    f.write_text('allow_requests = ["status"]\n')
    assert load_config(f, env={}).allow_requests == ("status",)
    assert load_config(None, env={"RAMAN_EDGE_ALLOW_REQUESTS": "status,replay,set"}).allow_requests == (
        "status",
        "replay",
        "set",
    )
    with pytest.raises(ConfigError, match="unknown command"):
        load_config(None, env={"RAMAN_EDGE_ALLOW_REQUESTS": "status,reboot"})
