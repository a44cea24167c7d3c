"""A node's step profile (inferchain/node/profile.py): phase totals, and the opt-in per-step trace file."""

from __future__ import annotations

import pytest

from inferchain.node.profile import PHASES, TRACE_ENV, StepProfile, StepStamps


def stamps(base: float) -> StepStamps:
    return StepStamps(
        received=base,
        decoded=base + 0.001,
        compute_start=base + 0.0015,
        compute_end=base + 0.0215,
        resumed=base + 0.022,
        pushed=base + 0.0225,
        encoded=base + 0.023,
        sent=base + 0.024,
    )


def test_phases_add_up_to_the_step():
    profile = StepProfile(trace=None)
    profile.add(stamps(10.0))
    profile.add(stamps(20.0))
    snap = profile.snapshot()
    assert snap["steps"] == 2
    assert set(snap) == {"steps", *PHASES}
    assert snap["compute"] == pytest.approx(40.0)
    assert sum(snap[p] for p in PHASES) == pytest.approx(48.0)


def test_trace_lines_carry_each_steps_stamps(tmp_path, monkeypatch):
    path = tmp_path / "steps.txt"
    monkeypatch.setenv(TRACE_ENV, str(path))
    profile = StepProfile()  # the node's environment turns the trace on
    assert StepProfile(trace=None).trace is None
    profile.add(stamps(10.0), "0xabc", (10, 20), 41)
    profile.add(stamps(20.0), "bad id\nwith 0 1 2 lines", (10, 20), 42)  # a client picks its session id
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = lines[0].split()
    assert first[:4] == ["0xabc", "10", "20", "41"]
    s = stamps(10.0)
    expected = [s.received, s.decoded, s.compute_start, s.compute_end, s.pushed, s.sent]
    assert [float(v) for v in first[4:]] == expected
    second = lines[1].split()
    assert len(second) == 10 and second[0] == "badidwith012lines" and second[3] == "42"
    assert profile.snapshot()["steps"] == 2
