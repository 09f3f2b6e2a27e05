"""The typed config: files, overrides and one-line errors for bad keys and types."""

import pytest

from fastleading.config import Config, apply_overrides, load_config
from fastleading.errors import FastleadingError


def test_yaml_and_toml_files_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epochs: 7\n  fanouts: [4, 3, 2]\nmodel:\n  alpha: 0.2\n")
    (tmp_path / "a.toml").write_text("[train]\nepochs = 7\nfanouts = [4, 3, 2]\n[model]\nalpha = 0.2\n")
    for name in ("a.yaml", "a.toml"):
        cfg = load_config(tmp_path / name)
        assert cfg.train.epochs == 7 and cfg.train.fanouts == [4, 3, 2] and cfg.model.alpha == 0.2
    cfg = apply_overrides(Config(), ["train.fanouts=5,5", "train.overlap=false", "data.root=none"])
    assert cfg.train.fanouts == [5, 5] and cfg.train.overlap is False and cfg.data.root is None


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  epoch: 3\n", "unknown config key 'train.epoch'"),
    ("trian:\n  epochs: 3\n", "unknown section 'trian'"),
    ("train:\n  epochs: three\n", "'train.epochs': expected an integer"),
    ("train:\n  method: magic\n", "'train.method': expected one of leading"),
    ("model:\n  alpha: 1.5\n", "'model.alpha': expected 0 < alpha <= 1"),
    ("train:\n  overlap: maybe\n", "'train.overlap': expected true or false"),
])
def test_bad_config_gives_one_clear_line(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FastleadingError) as e:
        load_config(path)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(FastleadingError, match="expected section.key=value"):
        apply_overrides(Config(), ["epochs=3"])
    with pytest.raises(FastleadingError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name, text", [("a.yaml", "train:\n  epochs: 7\n"), ("a.toml", "[train]\nepochs = 7\n"),
                                        ("a.json", '{"train": {"epochs": 7}}')])
def test_a_config_file_with_a_byte_order_mark(tmp_path, name, text):
    """Editors on some systems save UTF-8 with a byte-order mark (failed before for TOML and JSON:
    "cannot parse config")."""
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config(tmp_path / name).train.epochs == 7


def test_no_bank_fill_with_the_head_warm_up_is_refused_in_one_line():
    """LEADING's head warm-up trains and evaluates the head on the bank: without the bank fill
    that bank is all zeros, and such an epoch could become best.pt (issue 25)."""
    for warmup in ("-1", "5"):
        with pytest.raises(FastleadingError, match=r"train.fill_bank=false.*train.head_warmup_epochs") as e:
            apply_overrides(Config(), ["train.fill_bank=false", f"train.head_warmup_epochs={warmup}"])
        assert "\n" not in str(e.value)
    apply_overrides(Config(), ["train.fill_bank=false", "train.head_warmup_epochs=0"])
    apply_overrides(Config(), ["train.fill_bank=false", "train.method=coupled"])  # auto: no warm-up
