"""One validation layer: the CLI, the dataclasses and strict JSON refuse the
same values the HTTP service refuses (tests/test_service_faults.py)."""

import json
from pathlib import Path

import pytest

from flipsketch.cli import main
from flipsketch.jsonio import write_json
from flipsketch.params import AnimateParams
from flipsketch.train_config import TrainConfig
from flipsketch.validation import FieldError, Roots, parse_json

from .conftest import ROOT

CAT = str(ROOT / "examples" / "cat.png")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--guidance", "nan"], "Parameter 'guidance' is nan"),
        (["--guidance", "inf"], "Parameter 'guidance' is inf"),
        (["--guidance", "1e308"], "Parameter 'guidance' is 1e+308"),
        (["--align-lr", "nan"], "Parameter 'align_lr' is nan"),
        (["--align-lr", "inf"], "Parameter 'align_lr' is inf"),
        (["--motion", "nan"], "Parameter 'motion' is nan"),
        (["--align-tol=-inf"], "Parameter 'align_tol' is -inf"),
        (["--lora", "/some/lora=nan"], "LoRA 'loras[0].weight' is nan"),
        (["--prompt", "x" * 2001], "Parameter 'prompt' is 2001 characters long"),
    ],
)
def test_cli_refuses_what_the_service_refuses(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    args = ["animate", CAT, "--prompt", "the cat waves", "--out", str(tmp_path / "run"), *flags]
    assert main(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--alpha", "nan"], ["--lr", "inf"], ["--alpha", "1e308"], ["--lr", "nan"]])
def test_cli_training_options_are_finite(flags: list[str], tmp_path: Path, capsys) -> None:
    assert main(["train-lora", str(tmp_path), "--out", str(tmp_path / "lora"), *flags]) == 2
    assert "Training option" in capsys.readouterr().err and not (tmp_path / "lora").exists()


def test_dataclasses_check_every_float() -> None:
    for name, value in [("guidance", float("nan")), ("align_lr", float("inf")), ("motion", -0.1), ("guidance", 51)]:
        with pytest.raises(FieldError) as info:
            AnimateParams(prompt="x", **{name: value}).validate()
        assert info.value.field == name
    with pytest.raises(FieldError) as info:
        AnimateParams(prompt="\ud800").validate()
    assert info.value.field == "prompt" and "UTF-8" in info.value.message
    for name, value in [("alpha", float("nan")), ("learning_rate", float("inf")), ("caption_dropout", float("nan"))]:
        with pytest.raises(FieldError) as info:
            TrainConfig(**{name: value}).validate()
        assert info.value.field == name


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ('{"a": NaN}', "a", "is NaN"),
        ('{"a": [1, -Infinity]}', "a[1]", "is -Infinity"),
        ('{"a": {"b": 1e999}}', "a.b", "is 1e999"),
        ('{"a": "\\ud800"}', "a", "not valid UTF-8"),
        ('{"\\udc00": 1}', "<key>", "not valid UTF-8"),
        ("[" * 40 + "]" * 40, "[0]" * 32, "nested deeper than 32"),
        ("[" * 50_000 + "]" * 50_000, None, "nested deeper than 32"),
        ("{'a': 1}", None, "not valid JSON"),
        (b"\xff\xfe{}", None, "not valid JSON"),
    ],
)
def test_parse_json_is_strict_and_names_the_field(text, field: str | None, message: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_json(text)
    assert info.value.field == field and message in info.value.message


def test_parse_json_keeps_what_is_valid() -> None:
    assert parse_json('{"a": [1, 2.5, "é", null, true], "b": {"c": -0.0}}') == {
        "a": [1, 2.5, "é", None, True],
        "b": {"c": -0.0},
    }


def test_write_json_is_strict_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_json(path, {"loss": 0.5})
    with pytest.raises(ValueError):
        write_json(path, {"loss": float("nan")})
    assert json.loads(path.read_text()) == {"loss": 0.5} and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_roots_refuse_the_same_way_whatever_exists(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inside").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    roots = Roots([root])
    assert roots.path("data", str(root / "inside")) == root / "inside"
    assert roots.path("data", str(root / "not-yet")) == root / "not-yet"  # existence is the caller's business
    messages = set()
    for path in (outside, tmp_path / "missing", root / "escape", root / ".." / "outside", "/"):
        with pytest.raises(FieldError) as info:
            roots.path("data", str(path))
        messages.add(info.value.message)
    assert messages == {"'data' is outside the folders this server may use."}
