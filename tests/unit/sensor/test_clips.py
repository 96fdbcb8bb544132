"""The voice-band loudness check: speech-like clips are withheld, gunfire clips are kept."""

from __future__ import annotations

import numpy as np
import pytest

from services.sensor.kit import load_clips
from shared.audio import ClipPolicy, encode_wav, speech_like_share
from tests.conftest import SHARED_KIT
from tests.support.audio import SR, impulses, speech

DATA = SHARED_KIT / "data" / "pittsburgh-2018"


def test_a_clip_of_speech_is_withheld_and_can_be_allowed() -> None:
    x = speech(2.0) + impulses([SR * 1.0], 2.0, noise_rms=10.0)
    assert not ClipPolicy().keeps(x, SR, SR)
    assert ClipPolicy(max_voice_share=1.0).keeps(x, SR, SR)
    assert ClipPolicy(enabled=False).keeps(x, SR, SR)


def test_a_gunshot_in_street_noise_is_kept() -> None:
    x = impulses([SR * 1.0, SR * 1.45], 2.0, noise_rms=300.0)  # two rounds, 0.45 s apart
    assert speech_like_share(x, SR, SR, ClipPolicy()) == 0.0


@pytest.mark.skipif(not (DATA / "FP1").is_dir(), reason=f"the kit's audio is not at {DATA}")
def test_real_gunfire_clips_are_kept() -> None:
    """Every 2 s clip around a pulse the vendor used, FP1 (bursts, echoes, street noise)."""
    shares = []
    for clip in load_clips(DATA, ("FP1",)):
        for p in clip.pulses:
            i = int(p.offset_s * SR)
            seg = clip.samples[max(0, i - SR) : i + SR].astype(np.float64)
            if p.used and np.count_nonzero(seg) > 0.9 * seg.size:
                shares.append(speech_like_share(seg, SR, SR, ClipPolicy()))
    assert len(shares) > 100
    assert max(shares) <= ClipPolicy().max_voice_share


def test_a_clip_is_a_mono_16_bit_wav_of_its_samples() -> None:
    import io
    import wave

    x = impulses([600.0], 0.2)
    with wave.open(io.BytesIO(encode_wav(x, SR)), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        got = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(got, np.clip(np.round(x), -32768, 32767).astype(np.int16))
