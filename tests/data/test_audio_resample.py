"""One anti-aliased resampler for every audio path (FFmpeg's swresample through PyAV)."""
from __future__ import annotations

import numpy as np

from dawn_train.data.audio import decode_audio, read_wav, resample, write_wav


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x[2000:-2000] ** 2)))


def test_resample_keeps_speech_band_and_removes_what_would_alias():
    rate = 44100
    t = np.arange(2 * rate) / rate
    speech_band = resample(0.5 * np.sin(2 * np.pi * 440 * t), rate)
    above_nyquist = resample(0.5 * np.sin(2 * np.pi * 12000 * t), rate)  # 12 kHz > 8 kHz: would fold to 4 kHz
    assert len(speech_band) == 32000 and abs(rms(speech_band) - 0.5 / np.sqrt(2)) < 0.01
    assert rms(above_nyquist) < 1e-3  # linear interpolation leaves ~0.1 here
    linear = np.interp(np.arange(32000) * rate / 16000, np.arange(len(t)), 0.5 * np.sin(2 * np.pi * 12000 * t))
    assert rms(linear) > 0.05


def test_wav_files_at_other_rates_go_through_it(tmp_path):
    rate = 22050
    t = np.arange(rate) / rate
    tone = 0.4 * np.sin(2 * np.pi * 300 * t) + 0.3 * np.sin(2 * np.pi * 10000 * t)
    write_wav(str(tmp_path / "x.wav"), tone, rate)
    from_wav = read_wav(tmp_path / "x.wav")
    decoded, start = decode_audio(tmp_path / "x.wav")
    assert len(from_wav) == 16000 and start == 0.0 and abs(len(decoded) - 16000) <= 32
    assert abs(rms(from_wav) - 0.4 / np.sqrt(2)) < 0.01  # the 10 kHz part is gone, the 300 Hz one kept
