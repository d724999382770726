"""Configs: profiles as data (unknown names rejected), typed overrides, every field
read by a method exposed, round trip through JSON."""
import dataclasses
import json

import pytest

from dcl_lib.config import DATA_PROFILES, METHOD_PROFILES, PROFILES, coerce_value, resolve_profile
from dcl_lib.methods import get_spec, method_names


def test_resolve_profile(monkeypatch):
    monkeypatch.delenv("DCL_PROFILE", raising=False)
    assert resolve_profile() == "quick"
    monkeypatch.setenv("DCL_PROFILE", "FULL")
    assert resolve_profile() == "full"
    with pytest.raises(ValueError, match="profile must be one of"):
        resolve_profile("medium")
    assert set(DATA_PROFILES) == set(PROFILES) | set(METHOD_PROFILES)
    # a method's own profile only where its config defines one
    assert resolve_profile("paper", extra=("paper",)) == "paper"
    with pytest.raises(ValueError, match="profile must be one of"):
        resolve_profile("paper")
    with pytest.raises(ValueError, match="profile must be one of"):
        resolve_profile("medium", extra=("medium",))  # not a profile the data know


@pytest.mark.parametrize("name", method_names())
def test_every_method_config_has_both_profiles_and_rejects_others(name):
    cls = get_spec(name).config
    assert set(cls.profiles) <= set(PROFILES) | set(METHOD_PROFILES)
    if "paper" not in cls.profiles:
        with pytest.raises(ValueError, match="profile must be one of"):
            cls.for_profile("paper")
    for p in (*PROFILES, *(q for q in cls.profiles if q not in PROFILES)):
        cfg = cls.for_profile(p)
        assert dataclasses.is_dataclass(cfg)
        # JSON round trip keeps every value and its type (tuples included)
        again = cls.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
        assert again == cfg
    with pytest.raises(ValueError, match="profile must be one of"):
        cls.for_profile("medium")
    with pytest.raises(ValueError, match="unknown config field"):
        cls.for_profile("quick").with_overrides({"no_such_field": "1"})


@pytest.mark.parametrize("value, tp, expected", [
    ("3", int, 3), ("1e-3", float, 1e-3), ("2", float, 2.0), ("True", bool, True),
    ("(32, 64)", tuple[int, int], (32, 64)), ("[1, 2, 3]", tuple[int, ...], (1, 2, 3)),
    ("None", float | None, None), ("480", float | None, 480.0),
])
def test_overrides_are_parsed_and_typed(value, tp, expected):
    from dcl_lib.config import parse_text

    got = coerce_value(parse_text(value), tp)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, tp, message", [
    (1, bool, "must be True or False"), (True, int, "must be an integer"), (1.5, int, "integer"),
    ("a", float, "must be a number"), ((1, 2, 3), tuple[int, int], "must have 2 entries"),
    (5, tuple[int, ...], "must be a tuple"), ("x", float | None, "must be float or NoneType"),
])
def test_bad_override_types(value, tp, message):
    with pytest.raises(ValueError, match=message):
        coerce_value(value, tp, "field")


def test_string_fields_keep_text_and_tuples_stay_tuples():
    cg = get_spec("clustergan").config.for_profile("quick").with_overrides(
        {"channels": "(32, 64)", "prior": "normal", "use_encoder": "False"})
    assert cg.channels == (32, 64) and cg.prior == "normal" and cg.use_encoder is False
    dp = get_spec("depict").config.for_profile("quick").with_overrides({"target": "sqrt"})
    assert dp.target == "sqrt"
    with pytest.raises(ValueError, match="detach_targets must be True or False"):
        get_spec("depict").config.for_profile("quick").with_overrides({"detach_targets": "1"})


def test_gmm_ae_exposes_every_autoencoder_field():
    from dcl_lib.methods.autoencoder import AutoencoderConfig

    cfg = get_spec("gmm-ae").config.for_profile("quick").with_overrides({"input_dropout": "0"})
    ae = cfg.autoencoder()
    assert ae.input_dropout == 0.0 and ae.hidden == AutoencoderConfig.for_profile("quick").hidden
    assert {f.name for f in dataclasses.fields(AutoencoderConfig)} <= \
        {f.name for f in dataclasses.fields(cfg)}
