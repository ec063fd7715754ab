"""Weight lookup: explicit path, environment folder, cache, and a clear error when missing."""

from __future__ import annotations

import pytest
import torch

from pipeline.io.weights import ENV_DIR, WEIGHTS, WeightsNotFoundError, load_state_dict, sha256_of, weight_path


@pytest.mark.parametrize("name", [n for n, spec in WEIGHTS.items() if spec.sha256])
def test_shared_files_are_found_and_match_their_published_sha256(name):
    assert sha256_of(weight_path(name)) == WEIGHTS[name].sha256


def test_explicit_path_wins_over_the_environment(tmp_path):
    copy = tmp_path / "mine.pth"
    copy.write_bytes(weight_path("taef2_decoder").read_bytes())
    assert weight_path("taef2_decoder", copy) == copy
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        weight_path("taef2_decoder", tmp_path / "absent.pth")


@pytest.mark.fast
def test_missing_file_offline_names_the_file_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError) as error:
        weight_path("vgg16_features")
    message = str(error.value)
    assert "vgg16_features.pth" in message and ENV_DIR in message and "VSTYLE_OFFLINE" in message


def test_cache_folder_is_searched(tmp_path, monkeypatch):
    source = weight_path("raft_small")
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "vstyle" / "weights" / "raft_small.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(source.read_bytes())
    assert weight_path("raft_small") == cached


def test_fp16_state_dicts_load_as_float32():
    state = load_state_dict("taef2_encoder")
    assert {t.dtype for t in state.values()} == {torch.float32}


@pytest.mark.fast
def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="raft_small"):
        weight_path("raft_huge")
