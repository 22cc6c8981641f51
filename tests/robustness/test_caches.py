"""Caches that heal (docs/robustness.md, "Caches that heal"): a truncated shard of the tiny or world preset's cache
is rebuilt on the next load with one WARNING, a damage of the same size is caught when the file fails to load,
and a cache that is still damaged after its rebuild is one line naming the folder to delete."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eqdiff.config import ModelConfig
from eqdiff.errors import ModelError
from eqdiff.models import derived_cache
from eqdiff.models.components import load_components


def cache_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("preset", ["tiny", "world"])
def test_a_truncated_shard_is_rebuilt_on_the_next_load_with_one_warning(
    preset: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    config = ModelConfig(preset=preset, cache_dir=str(tmp_path))
    load_components(config)
    [directory] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    intact = cache_files(directory)
    shard = max(directory.rglob("*.safetensors"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a full disk, a killed copy
    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_components(config)
    [line] = warnings_of(caplog)
    assert f"{preset} preset cache {directory}: " in line and shard.name in line and "rebuilding it" in line
    assert cache_files(directory) == intact  # rebuilt whole, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [directory.name]
    caplog.clear()
    load_components(config)  # intact now: no warning, no rebuild
    assert warnings_of(caplog) == []


def test_a_damage_of_the_same_size_is_caught_when_the_file_fails_to_load(tmp_path: Path, caplog):
    config = ModelConfig(preset="tiny", cache_dir=str(tmp_path))
    load_components(config)
    [directory] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    shard = directory / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(shard.read_bytes())
    data[:8] = b"\xff" * 8  # the header's length: the size is unchanged, the file no longer loads
    shard.write_bytes(bytes(data))
    caplog.clear()
    components = load_components(config)
    [line] = warnings_of(caplog)
    assert str(directory) in line and "rebuilding that cache once" in line
    assert components.vae is not None and derived_cache.damage(directory) is None


def test_a_cache_still_damaged_after_its_rebuild_names_the_folder_to_delete(tmp_path: Path, monkeypatch):
    import eqdiff.models.components as components

    def broken(source: str, allow_download: bool):
        raise ModelError(f"{source}: could not load the model (a disk that returns bad blocks)")

    monkeypatch.setattr(components, "read_components", broken)
    with pytest.raises(ModelError) as raised:
        components.load_components(ModelConfig(preset="tiny", cache_dir=str(tmp_path)))
    message = str(raised.value)
    assert "\n" not in message and message.endswith(f"delete the folder {tmp_path / 'tiny-v1-seed0'}")


def test_the_cheap_check_finds_a_truncated_file_and_a_rebuild_still_damaged_is_one_line(tmp_path: Path, monkeypatch):
    def make(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"12345678")

    directory = derived_cache.ensure(tmp_path / "demo", make, "demo")
    (directory / "weights.bin").write_bytes(b"1234")
    assert derived_cache.damage(directory) == "weights.bin has 4 bytes, expected 8"
    derived_cache.ensure(directory, make, "demo")
    assert derived_cache.damage(directory) is None
    original = derived_cache.build

    def build_then_truncate(target: Path, maker) -> None:  # a disk still full: the rebuilt file is cut short again
        original(target, maker)
        (target / "weights.bin").write_bytes(b"12")

    monkeypatch.setattr(derived_cache, "build", build_then_truncate)
    (directory / "weights.bin").write_bytes(b"1")
    with pytest.raises(ModelError, match=r"^demo cache .*demo: still damaged after a rebuild \(weights.bin has 2 "):
        derived_cache.ensure(directory, make, "demo")
