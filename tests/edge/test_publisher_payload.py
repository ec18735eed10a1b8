"""Result payload: schema conformance, round trip, and the publisher's local failure modes."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import OutboxFullError, PayloadError, UsageError
from edge.outbox import Outbox, OutboxLimits
from edge.publisher import Publisher, _finalise_payload
from edge.result import SCHEMA_ID, Candidate, Match, MixtureComponent, Peak, Quality, Result


def test_payload_matches_schema_and_round_trips(make_result: Any, schema_check: Any) -> None:
    for status in ("ok", "rejected"):
        r = make_result(status=status).stamped(seq=7, id="dev1-abc-7")
        obj = json.loads(r.to_json())
        assert schema_check(obj) == []
        assert obj["schema"] == SCHEMA_ID and obj["acquired_at"] == "2025-01-02T03:04:05.678Z"
        assert Result.from_json(r.to_json()) == r


def test_result2_match_and_mixture_round_trip_and_result1_is_still_read(make_result: Any, schema_check: Any) -> None:
    r = replace(
        make_result(),
        match=Match(mineral="quartz", rruff_id="R040031", similarity=0.987),
        mixture=(MixtureComponent(mineral="quartz", fraction=0.6), MixtureComponent(mineral="calcite", fraction=0.4)),
    ).stamped(seq=3, id="dev1-abc-3")
    obj = json.loads(r.to_json())
    assert SCHEMA_ID == "raman-edge/result/2" and schema_check(obj) == []
    assert obj["match"]["rruff_id"] == "R040031" and [m["mineral"] for m in obj["mixture"]] == ["quartz", "calcite"]
    assert Result.from_json(r.to_json()) == r
    obj["mixture"] = [{"mineral": "quartz", "fraction": 0.9}]
    assert schema_check(obj) != []  # a mixture has at least two minerals
    with pytest.raises(UsageError, match="sum to 1"):
        replace(r, mixture=(MixtureComponent(mineral="a", fraction=0.5), MixtureComponent(mineral="b", fraction=0.2)))
    old = json.loads(make_result().stamped(seq=1, id="dev1-abc-1").to_json())
    old["schema"] = "raman-edge/result/1"
    del old["match"], old["mixture"]
    back = Result.from_dict(old)
    assert back.match is None and back.mixture is None and back.schema == SCHEMA_ID


def test_wire_payload_after_publisher_finalises_latency(make_result: Any, schema_check: Any) -> None:
    stored = make_result().stamped(seq=1, id="dev1-abc-1").to_json()
    obj = json.loads(_finalise_payload(stored, commit_ms=2.5, waited_s=0.1))
    assert schema_check(obj) == []
    lat = obj["latency_ms"]
    assert lat["commit"] == 2.5 and lat["publish"] == pytest.approx(100.0)
    assert lat["total"] == pytest.approx(0.4 + 3.1 + 5.2 + 2.0 + 2.5 + 100.0)


def test_non_finite_metrics_are_sent_as_null(make_result: Any, schema_check: Any) -> None:
    r = replace(make_result(), quality=Quality(snr=math.nan, fluorescence_ratio=math.inf))
    obj = json.loads(r.stamped(seq=1, id="x-1").to_json())
    assert obj["quality"]["snr"] is None and obj["quality"]["fluorescence_ratio"] is None
    assert schema_check(obj) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("seq"),
        lambda o: o.update(schema="raman-edge/result/0"),
        lambda o: o.update(status="maybe"),
        lambda o: o.update(acquired_at="2025-01-02T03:04:05"),
        lambda o: o["top"].append({"mineral": "x"}),
        lambda o: o["instrument"].update(extra=1),
    ],
)
def test_malformed_payloads_are_rejected(make_result: Any, schema_check: Any, mutate: Any) -> None:
    obj = json.loads(make_result().stamped(seq=1, id="x-1").to_json())
    mutate(obj)
    assert schema_check(obj) != []
    with pytest.raises(PayloadError):
        Result.from_json(json.dumps(obj))


def test_invalid_results_are_refused_at_construction(make_result: Any) -> None:
    with pytest.raises(UsageError, match="reason"):
        replace(make_result(), status="rejected", reason=None)
    with pytest.raises(UsageError, match="best first"):
        replace(make_result(), top=(Candidate(mineral="a", p=0.1), Candidate(mineral="b", p=0.8)))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ps=st.lists(st.floats(0, 1), max_size=5),
    shifts=st.lists(st.floats(-1e4, 1e4), max_size=8),
    seq=st.integers(1, 2**53),
)
def test_round_trip_property(
    make_result: Any, schema_check: Any, ps: list[float], shifts: list[float], seq: int
) -> None:
    r = replace(
        make_result(),
        top=tuple(Candidate(mineral=f"m{i}", p=p) for i, p in enumerate(sorted(ps, reverse=True))),
        peaks=tuple(Peak(shift_cm1=s, relevance=1.0, intensity=0.5) for s in shifts),
    ).stamped(seq=seq, id=f"dev1-x-{seq}")
    assert schema_check(json.loads(r.to_json())) == []
    assert Result.from_json(r.to_json()) == r


def test_enqueue_on_full_disk_raises_logs_the_result_and_is_counted(
    tmp_path: Path, make_result: Any, mqtt_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ob = Outbox(tmp_path / "o.sqlite", device_id="dev1", max_db_pages=12)
    # Not started: enqueue is purely local, so no broker is needed here.
    pub = Publisher(mqtt_settings("mqtt://127.0.0.1:1"), ob, owns_outbox=True)
    with pytest.raises(OutboxFullError, match="full"):
        for i in range(10_000):
            pub.enqueue(make_result(i))
    assert pub.stats().outbox_full_total == 1
    logged = [r for r in caplog.records if r.getMessage() == "result not stored, outbox full"]
    assert len(logged) == 1 and json.loads(logged[0].result)["device_id"] == "dev1"  # type: ignore[attr-defined]
    assert pub.stats().queue_depth == pub.pending() > 0
    pub.close()


def test_enqueue_drop_oldest_shows_in_stats(
    tmp_path: Path, make_result: Any, mqtt_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ob = Outbox(tmp_path / "o.sqlite", device_id="dev1", limits=OutboxLimits(max_rows=3))
    pub = Publisher(mqtt_settings("mqtt://127.0.0.1:1"), ob, owns_outbox=True)
    stamped = [pub.enqueue(make_result(i)) for i in range(5)]
    s = pub.stats()
    assert (s.queue_depth, s.dropped_total, s.results_total) == (3, 2, 5)
    assert [r.seq for r in stamped] == [1, 2, 3, 4, 5]
    assert sum("dropped oldest" in r.getMessage() for r in caplog.records) == 2
    pub.close()
