import numpy as np
import pytest

from dawn_train.data.audio import AudioError, LogMelSpec, log_mel, mel_filterbank, read_wav, wav_bytes
from dawn_train.data.schema import SAMPLE_RATE, SAMPLES_PER_FRAME


def test_wav_round_trip_and_bad_input(tmp_path):
    audio = np.sin(np.linspace(0, 100, 16000)).astype(np.float32) * 0.5
    assert np.abs(read_wav(wav_bytes(audio)) - audio).max() < 1e-4
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file")
    with pytest.raises(AudioError, match="bad.wav"):
        read_wav(bad)


def test_mel_filterbank_shape_and_coverage():
    bank = mel_filterbank(80, 1024)
    assert bank.shape == (80, 513) and (bank >= 0).all()
    assert (bank.sum(1) > 0).all()  # no empty filter
    peaks = bank.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # filters ordered by frequency


def test_log_mel_one_row_per_frame_aligned():
    n_frames = 20
    audio = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    burst = 7  # a tone burst exactly inside video frame 7
    t = np.arange(SAMPLES_PER_FRAME) / SAMPLE_RATE
    audio[burst * SAMPLES_PER_FRAME:(burst + 1) * SAMPLES_PER_FRAME] = np.sin(2 * np.pi * 1000 * t)
    feature = log_mel(audio, n_frames)
    assert feature.shape == (n_frames, LogMelSpec().n_mels)
    energy = feature.max(1)
    assert energy.argmax() == burst
    assert energy[burst] > energy[burst - 2] + 5 and energy[burst] > energy[burst + 2] + 5
