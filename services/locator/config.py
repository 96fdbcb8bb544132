"""Tuning of the locator's pure domain code, as one immutable value.

A plain frozen dataclass (not pydantic-settings): the service's ``LocatorSettings`` maps its
environment variables onto it, and tests/benchmarks build it directly. Every field has a
default tuned on the Pittsburgh 2018 live-fire data (``bench/pittsburgh.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocatorConfig:
    """Physics, association, solver, incident and health parameters (SI units)."""

    # --- physics -------------------------------------------------------------------------
    #: Used when a detection carries no temperature_c (°C).
    default_temperature_c: float = 15.0
    #: Farthest a sensor can hear a shot (m). Bounds the association window and the search.
    max_range_m: float = 2000.0

    # --- association / window ------------------------------------------------------------
    #: A pulse is consistent with a source when |observed - predicted| arrival <= this (s).
    association_tolerance_s: float = 0.025
    #: Added to the physics deadline (first arrival + max_range_m / c), s.
    window_margin_s: float = 0.25
    #: Extra wall-clock wait for detections that reach us late (network, batching), s; a
    #: window also waits this long after its first pulse was received (a late shot).
    ingest_lateness_s: float = 1.0
    #: Minimum distinct, mutually consistent sensors for a located round.
    min_sensors: int = 4
    #: Of the listening sensors out to the median distance of those that heard a fit, at least
    #: this share must have heard it (rejects coincidental fits of echoes / unrelated pulses).
    min_heard_share: float = 0.6
    #: Sensors within this distance of a real shot nearly always hear it (m); see above.
    hearing_range_m: float = 700.0
    #: A sensor counts as listening if it reported anything within this long (s).
    sensor_listening_s: float = 3600.0
    #: Reject a fit with fewer than ``min_sensors`` members that are not echoes: pulses
    #: trailing, within ``max_range_m / c``, an at-least-as-loud pulse at the same sensor
    #: that is not the previous round of a burst (``association.echo_shadowed``).
    reject_echo_fits: bool = True
    #: The echo rule's "at least as loud" allows this much SNR measurement scatter (dB): one
    #: arrival reported twice by a Pittsburgh sensor differed by 0.5 dB, so a reverberation
    #: measured a fraction of a dB above its direct sound is still its reverberation.
    #: (Pittsburgh gives the same result for any value from 0.5 to 10 dB.)
    echo_level_margin_db: float = 1.0

    # --- solver --------------------------------------------------------------------------
    #: Solve for height too (with a soft prior at the first-arrival sensor's height) ...
    solve_3d: bool = True
    #: ... when at least this many sensors are consistent (else 2-D at that height).
    min_sensors_3d: int = 6
    #: Standard deviation of that height prior (m); small = effectively 2-D at fixed height.
    z_prior_sigma_m: float = 30.0
    #: Huber threshold of the robust least squares, in range units (m).
    huber_m: float = 3.0
    #: Gauss-Newton iterations per refinement pass.
    gauss_newton_iterations: int = 4
    #: Floor of the range residual scale used for the covariance (m): the model is never
    #: better than this (timing quantisation, sensor position error, propagation).
    range_sigma_floor_m: float = 1.5
    #: Added in quadrature to the statistical 95 % radius (m): survey/GPS and model bias.
    radius95_floor_m: float = 6.0
    #: Multiplier on the statistical 95 % radius (calibrated on real data).
    radius95_scale: float = 1.0

    # --- incidents -----------------------------------------------------------------------
    #: A round within this time of an incident's latest round may update it (s).
    update_window_s: float = 60.0
    #: ... if it is also within this distance of the incident's location (m).
    update_distance_m: float = 60.0

    # --- sensor health -------------------------------------------------------------------
    #: Solves remembered per sensor for its residual summary.
    health_window: int = 50
    #: Fewest remembered solves before a sensor may be flagged.
    health_min_samples: int = 5
    #: Flag a sensor whose median signed residual exceeds this (s) — a drifting clock.
    health_max_median_residual_s: float = 0.010
    #: ... or that was rejected as inconsistent in more than this share of its solves.
    health_max_rejected_share: float = 0.5

    # --- bounds --------------------------------------------------------------------------
    #: Most pending (not yet decided) detections held per zone; older ones are decided first.
    max_pending: int = 20000

    def __post_init__(self) -> None:
        if self.min_sensors < 3:
            raise ValueError("min_sensors must be >= 3 (2-D position + emission time)")
        if self.association_tolerance_s <= 0 or self.max_range_m <= 0:
            raise ValueError("association_tolerance_s and max_range_m must be positive")
        if self.echo_level_margin_db < 0:
            raise ValueError("echo_level_margin_db must be >= 0")
        if self.update_window_s < 0 or self.update_distance_m < 0:
            raise ValueError("update_window_s and update_distance_m must be >= 0")
