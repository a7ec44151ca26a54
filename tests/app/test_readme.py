"""The README's configuration table lists every setting (docs that cannot drift silently)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    text = README.read_text()
    start, end = "<!-- section:configuration -->", "<!-- /section:configuration -->"
    section = text[text.index(start) : text.index(end)]
    missing = [name for name in Settings.model_fields if f"`INFERENCE_{name.upper()}`" not in section]
    assert missing == []
