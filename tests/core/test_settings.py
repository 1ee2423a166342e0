import re

import pytest
import yaml

from rlhf.core.pipeline.params import keys, params_yaml, sections
from rlhf.core.settings import METHODS, PPO, Settings, UserError, load_settings
from tests.support.project import ROOT


def write(tmp_path, text: str):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_project_params_load_with_defaults_checked():
    s = load_settings(ROOT / "params.yaml")
    assert s.pretrain.init_checkpoint is None
    assert s.section("ppo", PPO).gamma == 1.0 and s.section("ppo", PPO).lam == 0.95
    assert s.root == str(ROOT)


def test_a_params_file_names_only_what_it_changes(tmp_path):
    s = load_settings(write(tmp_path, "ppo:\n  iterations: 7\n"))
    assert s.section("ppo", PPO).iterations == 7
    assert s.section("ppo", PPO).lr == PPO().lr and s.sft == Settings().sft
    assert load_settings(write(tmp_path, "")) == Settings(root=str(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ppo:\n  iterashuns: 3\n", "ppo.iterashuns: unknown key (did you mean iterations?)"),
        ("ppp: {}\n", "ppp: unknown key (did you mean ppo?)"),
        ("sft:\n  stepz: 3\n", "sft.stepz: unknown key (did you mean steps?)"),
        ("loop:\n  label_studio: {url: 'http://x', projekt: a}\n", "label_studio.projekt"),
        ("rootz: 1\n", "rootz: unknown key"),
    ],
)
def test_an_unknown_key_is_named_with_the_nearest_known_one(tmp_path, text, message):
    with pytest.raises(UserError, match=rf"params.yaml: .*{re.escape(message)}"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sft:\n  steps: '100'\n", r"sft.steps: Input should be a valid integer \(got '100'\)"),
        ("sft:\n  steps: -5\n", r"sft.steps: Input should be greater than 0 \(got -5\)"),
        ("reward:\n  lr: .inf\n", r"reward.lr: Input should be a finite number"),
        ("ppo:\n  lr: .nan\n", r"ppo.lr: Input should be a finite number"),
        ("group:\n  group_size: 1\n", r"group.group_size: Input should be greater than or equal"),
        ("policy:\n  method: sac\n", r"policy.method: 'sac' is not a method \(ppo \| grpo"),
        ("compare:\n  methods: [ppo, ppo]\n", r"compare.methods: names a method twice"),
        ("feedback:\n  rating_range: [3, 1]\n", r"feedback: rating_range must be two finite"),
        ("feedback:\n  test_fraction: 0\n", r"feedback.test_fraction: Input should be greater"),
        ("seed: 4294967296\n", r"seed: Input should be less than or equal to 4294967295"),
        ("sft:\n  steps: 1000000000000\n", r"sft.steps: Input should be less than or equal"),
        ("ppo:\n  iterations: 1000000000000\n", r"ppo.iterations: Input should be less than"),
        ("sft:\n  gradient_accumulation_steps: 0\n", r"sft.gradient_accumulation_steps: Input"),
        (
            "pretrain:\n  presets:\n    odd: {hidden_size: 30, num_layers: 1, num_heads: 4, "
            "intermediate_size: 8}\n",
            r"hidden_size 30 must be num_heads \(4\) times an even head size",
        ),
        (
            "paths:\n  artifacts: data\n",
            r"paths.artifacts \(data\) and paths.data \(data\) overlap",
        ),
        ("paths:\n  artifacts: data/out\n", r"paths.artifacts .* and paths.data .* overlap"),
        ("paths:\n  data: artifacts/in\n", r"paths.artifacts .* and paths.data .* overlap"),
        ("paths:\n  artifacts: .\n", r"overlap \(or the outputs would be the project folder\)"),
        ("paths:\n  artifacts: ..\n", r"paths.artifacts: .. leaves the project folder"),
        ("paths:\n  data: ../../x\n", r"paths.data: ../../x leaves the project folder"),
        ("rewards:\n  model_weight: 0\n", r"rewards: .*model_weight 0 with no functions"),
        ("rewards:\n  model_weight: -1\n", r"rewards.model_weight: Input should be greater"),
        (
            "rewards:\n  model_weight: 0\n  functions:\n    - {name: x, fn: 'a:b'}\n"
            "policy:\n  method: dpo\n",
            r"model_weight 0 \(no reward model\) needs an online policy.method \(ppo \| grpo",
        ),
    ],
)
def test_a_wrong_value_is_one_line_naming_its_key(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as error:
        load_settings(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="no such params file"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_settings(write(tmp_path, "ppo: [unclosed\n"))


def test_section_digest_tracks_only_named_sections(tmp_path):
    a = load_settings(write(tmp_path, "ppo:\n  iterations: 5\n"))
    b = load_settings(write(tmp_path, "ppo:\n  iterations: 6\n"))
    assert a.section_digest("sft") == b.section_digest("sft")
    assert a.section_digest("ppo") != b.section_digest("ppo")


def test_every_key_has_a_meaning_and_its_default_passes_its_own_bounds():
    for name, model in sections():
        if model is None:
            continue
        assert model.__doc__, name
        for key in keys(model, f"{name}."):
            assert key.meaning or key.path.rpartition(".")[0] not in ("", name), key.path
    Settings()  # the defaults validate


def test_the_written_params_read_back_to_the_same_settings(tmp_path):
    source = write(
        tmp_path,
        "seed: 3\npretrain:\n  presets: {m: {hidden_size: 8, num_layers: 1, "
        "num_heads: 2, intermediate_size: 8}}\n  model: m\n"
        "loop:\n  label_studio: {url: 'http://127.0.0.1:1'}\n",
    )
    settings = load_settings(source)
    text = params_yaml(settings)
    again = write(tmp_path, text)
    assert load_settings(again) == settings
    assert params_yaml(load_settings(again)) == text
    assert "seed: 3  # default: 0" in text
    assert set(yaml.safe_load(params_yaml())) == {*Settings.model_fields, *METHODS_SECTIONS} - {
        "root"
    }


METHODS_SECTIONS = {m.section for m in METHODS.values()}


def test_an_absolute_path_outside_the_project_is_the_users_own_choice(tmp_path):
    elsewhere = tmp_path / "outputs"
    s = load_settings(write(tmp_path / "", f"paths:\n  artifacts: {elsewhere}\n"))
    assert s.paths.artifacts == str(elsewhere)


def test_a_project_folder_that_is_a_link_elsewhere_is_the_users_own_choice(tmp_path):
    disk = tmp_path / "bigdisk"
    disk.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "data").symlink_to(disk)  # data -> /mnt/bigdisk, as teams keep large data
    s = load_settings(write(project, "paths:\n  data: data\n"))
    assert s.data_dir == project / "data"
