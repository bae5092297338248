"""docs/configuration.md names every variable the code reads, with the code's defaults,
and every setting of every target kind."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

import adapters
from hpcbridge.settings import Settings
from hpcbridge.targets import Targets
from tests.examples import markdown
from tests.examples.conftest import DOCS, REPO

DOC = DOCS / "configuration.md"
VARIABLE = re.compile(r"[\"'](HPCBRIDGE_[A-Z0-9_]+|REDIS_URL|K_SINK)[\"']")


def text() -> str:
    return DOC.read_text()


def read_by(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in VARIABLE.findall(path.read_text())}


def documented() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", text()))


def test_every_variable_the_bridge_reads_is_documented() -> None:
    code = sorted((REPO / "hpcbridge").glob("*.py")) + sorted(
        (REPO / "functions").rglob("*.py"))
    variables = read_by(code)
    assert {"REDIS_URL", "K_SINK", "HPCBRIDGE_TARGETS", "HPCBRIDGE_BROKER"} <= variables
    assert variables - documented() == set()


def settings_rows() -> dict[str, str]:
    """variable -> its default, from the table of the functions' settings."""
    rows = {}
    for line in markdown.section(text(), "The functions").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_settings_table_is_exactly_what_settings_reads() -> None:
    # the bucket's settings are read where the bucket is made (Settings.bucket)
    in_settings = read_by([REPO / "hpcbridge" / "settings.py", REPO / "hpcbridge" / "s3.py"])
    assert set(settings_rows()) == in_settings


@pytest.mark.parametrize("variable", sorted(settings_rows()))
def test_a_documented_default_is_the_codes_default(variable: str) -> None:
    default = settings_rows()[variable]
    if not default.startswith("`"):
        assert default.startswith("unset"), default
        assert Settings.from_env({variable: ""}) == Settings.from_env({})
        return
    value = default.strip("`")
    # Setting the variable to its documented default changes nothing.
    assert Settings.from_env({variable: value}) == Settings.from_env({})


def test_the_quoted_messages_are_the_codes() -> None:
    quoted = [line for block in markdown.blocks(text()) if block.info == "text"
              for line in block.text.splitlines() if line.strip()]
    assert len(quoted) >= 10
    for message in quoted:
        assert markdown.missing_from_source(message) == [], message


def kind_settings(kind: str) -> set[str]:
    """The settings an adapter accepts: its module's ``_SETTINGS``, or, for an adapter with
    more than one transport, its ``_COMMON`` settings and those of each transport."""
    module = importlib.import_module(adapters.KINDS[kind].split(":")[0])
    parts = [getattr(module, name) for name in ("_SETTINGS", "_COMMON", "_WEB", "_SSH")
             if hasattr(module, name)]
    assert parts, f"the adapter module of {kind!r} does not say which settings it takes"
    return set().union(*parts) - {"kind"}


@pytest.mark.parametrize("kind", sorted(adapters.KINDS))
def test_every_target_kind_and_its_settings_are_documented(kind: str) -> None:
    try:
        part = markdown.section(text(), f"`{kind}`")
    except KeyError:
        pytest.fail(f"docs/configuration.md has no section ### `{kind}`")
    assert set(markdown.first_column(part)) == kind_settings(kind)


def test_the_targets_example_is_a_valid_targets_file(tmp_path: Path) -> None:
    (block,) = [b for b in markdown.blocks(text()) if b.info == "yaml"]
    path = tmp_path / "targets.yaml"
    path.write_text(block.text)
    targets = Targets.load(str(path))
    for name in targets:
        entry = yaml.safe_load(block.text)["targets"][name]
        assert set(entry) - {"kind"} <= kind_settings(entry["kind"]), name
