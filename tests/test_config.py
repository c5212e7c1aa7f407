from dataclasses import dataclass

import pytest

from smelt.config import ConfigError, doc, load_config, parse_overrides, to_toml, from_dict, load_toml
from smelt.model.config import ModelConfig, preset, resolve_preset


@dataclass
class Inner:
    lr: float = doc(1e-3, "learning rate")
    steps: int = doc(10, "steps")
    name: str = doc("x", "a name")
    flag: bool = doc(False, "a flag")


@dataclass
class Outer:
    inner: Inner = doc(Inner(), "inner section")
    seed: int = doc(0, "seed")

    def validate(self):
        if self.inner.steps <= 0:
            raise ConfigError("inner.steps: must be > 0")


def test_overrides_coerce_types():
    cfg = load_config(Outer, overrides=["--inner.lr", "3e-4", "--inner.steps=20", "--inner.flag", "true", "--seed", "7"])
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.inner.steps == 20 and cfg.inner.flag is True and cfg.seed == 7


def test_unknown_field_is_named(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[inner]\nlrr = 1.0\n")
    with pytest.raises(ConfigError, match=r"c.toml.*inner\.lrr: unknown field"):
        load_config(Outer, p)


def test_bad_type_is_named():
    with pytest.raises(ConfigError, match=r"inner\.steps: expected an integer"):
        load_config(Outer, overrides=["--inner.steps", "ten"])


def test_validate_runs():
    with pytest.raises(ConfigError, match=r"inner\.steps"):
        load_config(Outer, overrides=["--inner.steps", "0"])


def test_toml_round_trip(tmp_path):
    cfg = load_config(Outer, overrides=["--inner.name", "hello", "--seed", "3"])
    p = tmp_path / "out.toml"
    p.write_text(to_toml(cfg))
    assert from_dict(Outer, load_toml(p)) == cfg


def test_missing_override_value():
    with pytest.raises(ConfigError, match="missing a value"):
        parse_overrides(["--seed"])


def test_model_validation_names_field():
    with pytest.raises(ConfigError, match=r"model\.n_heads"):
        ModelConfig(d_model=130, n_heads=4).validate()
    with pytest.raises(ConfigError, match=r"model\.n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3).validate()
    with pytest.raises(ConfigError, match=r"model\.preset"):
        resolve_preset(ModelConfig(preset="nope"))


def test_preset_keeps_explicit_fields():
    cfg = resolve_preset(ModelConfig(preset="debug", n_layers=2), explicit={"n_layers": 2})
    assert cfg.n_layers == 2 and cfg.d_model == preset("debug").d_model


def test_shipped_recipes_load():
    from pathlib import Path

    from smelt.train.pretrain import load_run_config

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("pretrain-*.toml"))
    assert len(recipes) >= 2
    for r in recipes:
        cfg = load_run_config(r, ["--data.shards", "x"])
        assert cfg.model.n_layers > 0 and cfg.train.steps > 0
