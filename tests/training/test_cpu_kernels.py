"""Training's CPU kernels: bf16 only where native and asked for; old parameter hashes still hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsipipe.config import config_hash, to_dict
from wsipipe.errors import ConfigError
from wsipipe.training import DataParams, TrainParams, train_model
from wsipipe.training.stage import _hashed


def test_cpu_bf16_is_refused_on_a_cpu_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsipipe.inference import _runtime

    monkeypatch.setattr(_runtime, "cpu_bf16_supported", lambda: False)
    params = TrainParams(data=DataParams(format="pcam", root=tmp_path / "nowhere"), cpu_bf16=True)
    with pytest.raises(ConfigError, match="cpu_bf16: on was asked, but this CPU has neither AVX-512 BF16 nor AMX"):
        train_model(params, tmp_path / "run")


def test_cpu_bf16_enters_the_hash_only_when_on(tmp_path: Path) -> None:
    data = DataParams(format="pcam", root=tmp_path)
    off = TrainParams(data=data)
    before = {k: v for k, v in to_dict(off).items() if k != "cpu_bf16"}  # TrainParams as it was
    assert config_hash(_hashed(off)) == config_hash(before)
    assert config_hash(_hashed(TrainParams(data=data, cpu_bf16=True))) != config_hash(before)
