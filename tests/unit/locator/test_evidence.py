"""The scorer's inputs (services/locator/evidence.py) are values: equal by fields, hashable."""

from __future__ import annotations

from services.locator.evidence import PulseEvidence, ShotEvidence


def _pulse(distance_m: float) -> PulseEvidence:
    return PulseEvidence("s1", distance_m, 120.0, 30.0, 0.8, 12.0, 2400.0)


def test_evidence_is_a_value_equal_and_hashable_by_its_fields() -> None:
    shot = ShotEvidence(
        pulses=(_pulse(140.0), _pulse(220.0)),
        sensor_count=2,
        residual_rms_s=0.0004,
        round_intervals_s=(),
    )
    same = ShotEvidence(
        pulses=(_pulse(140.0), _pulse(220.0)),
        sensor_count=2,
        residual_rms_s=0.0004,
        round_intervals_s=(),
    )
    assert _pulse(140.0) == _pulse(140.0) and _pulse(140.0) != _pulse(141.0)
    assert hash(_pulse(140.0)) == hash(_pulse(140.0))
    # (a frozen ShotEvidence hashes its pulses: it must not raise)
    assert shot == same and len({shot, same}) == 1
