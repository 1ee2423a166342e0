from pathlib import Path

import pytest

from rlhf.core.settings import UserError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_load_with_defaults_checked():
    s = load_settings(ROOT / "params.yaml")
    assert s.pretrain.init_checkpoint is None
    assert s.ppo.gamma == 1.0 and s.ppo.lam == 0.95
    assert s.root == str(ROOT)


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("ppo:\n  iterashuns: 3\n")
    with pytest.raises(UserError, match=r"params.yaml: ppo.iterashuns: unknown key"):
        load_settings(p)


def test_wrong_type_is_named_without_coercion(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("sft:\n  steps: '100'\n")
    with pytest.raises(
        UserError, match=r"sft.steps: Input should be a valid integer \(got '100'\)"
    ):
        load_settings(p)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="no such params file"):
        load_settings(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_settings(bad)


def test_section_digest_tracks_only_named_sections(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("ppo:\n  iterations: 5\n")
    a = load_settings(p)
    p.write_text("ppo:\n  iterations: 6\n")
    b = load_settings(p)
    assert a.section_digest("sft") == b.section_digest("sft")
    assert a.section_digest("ppo") != b.section_digest("ppo")
