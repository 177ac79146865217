"""What a new user with 2 x RTX 3090 still tripped over (issue 30, "What a new user with 2 x 3090 still trips over")."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.profile.load import resolve, shipped_profiles_dir

# ------------------------------------------------------------------ 3: a user profile extending the shipped one of its name


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_user_profile_shadowing_a_shipped_name_extends_the_shipped_one(tmp_path: Path) -> None:
    mine = _write(tmp_path / "my" / "dual-3090.yaml", "extends: dual-3090\nengine:\n  max_model_len: 131072\n")
    by_name = resolve("dual-3090", profiles_dirs=[str(mine.parent)], environ={})
    assert by_name.path == mine
    assert by_name.profile.engine.max_model_len == 131072  # the one value changed
    assert by_name.profile.parallel.tp == 2 and by_name.profile.engine.attention_backend == "FLASHINFER"  # the rest shipped
    sources = [layer.source for layer in by_name.layers]
    assert str(shipped_profiles_dir() / "dual-3090.yaml") in sources and str(mine) in sources
    by_path = resolve(str(mine), profiles_dirs=[str(mine.parent)], environ={})
    assert by_path.profile.engine.max_model_len == 131072


def test_two_user_directories_each_extend_the_next_of_the_name(tmp_path: Path) -> None:
    a = _write(tmp_path / "a" / "dual-3090.yaml", "extends: dual-3090\nengine:\n  max_num_seqs: 8\n")
    b = _write(tmp_path / "b" / "dual-3090.yaml", "extends: dual-3090\nengine:\n  max_model_len: 65536\n")
    p = resolve("dual-3090", profiles_dirs=[str(a.parent), str(b.parent)], environ={}).profile
    assert (p.engine.max_num_seqs, p.engine.max_model_len, p.parallel.tp) == (8, 65536, 2)


def test_a_name_with_no_further_profile_is_still_a_cycle(tmp_path: Path) -> None:
    lone = _write(tmp_path / "u" / "lonely.yaml", "extends: lonely\n")
    with pytest.raises(ProfileError, match="`extends` cycle"):
        resolve("lonely", profiles_dirs=[str(lone.parent)], environ={})
