"""Physical bounds the locator's decisions rest on (constants with their sources; pure).

Each number here is forced by physics or by published firearm data, not fitted to a test
site; docs/locator-rules.md gives the argument and the sources in full.
"""

from __future__ import annotations

#: Two pulses of one sensor this close (s) are one onset reported twice (a resend under a new
#: detection id, a firmware re-trigger): a muzzle blast's N-wave lasts 1-3 ms, so no sensor
#: can hear two separate impulses within it, and the wire's arrival times are often rounded to
#: the millisecond (Pittsburgh 2018). Inclusive.
SAME_ONSET_S = 0.001

#: No firearm fires two rounds closer than this (s). The fastest hand-held automatic weapons
#: published cycle at about 1,200-1,700 rounds/min (Glock 18, MAC-10, Micro Uzi: 35-50 ms a
#: cycle); 30 ms is 2,000 rounds/min, a margin above all of them. Two "rounds" of one source
#: closer than this are one round reported twice.
MIN_ROUND_INTERVAL_S = 0.030

#: Spread (s) of the delays between two rounds of one source across the sensors that heard
#: both: the shooter moves under a metre between rounds (<= 1 m / c ~ 2.9 ms of path change)
#: and each arrival carries up to 1 ms of reporting resolution (two rounds: 2 ms).
REPEAT_SPREAD_S = 0.005

#: The next round of one gun reaches a sensor along the same path at the same level: shot-to-
#: shot variation of a firearm's muzzle blast (~1 dB) plus turbulent scatter of the path
#: (~1-2 dB) stay within this (dB); a reflection is 6 dB or more weaker (longer path plus
#: reflection loss), so a level this close marks a repeat, not an echo.
REPEAT_LEVEL_DB = 3.0

#: A round at an open incident's place whose arrivals trail that incident's by one common
#: delay needs this many shared sensors for the delay to prove a repeat (three fix a source).
REPEAT_MIN_SHARED = 3
