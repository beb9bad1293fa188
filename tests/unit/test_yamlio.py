"""The one YAML loader, and each JSON Schema parsed once per process."""

from __future__ import annotations

import yaml

from aifb import kinds, schemas, yamlio
from aifb.paths import schema_dir


def test_libyamls_loader_when_pyyaml_has_it_with_the_same_values():
    if yaml.__with_libyaml__:  # the PyPI wheels are built with it
        assert yamlio.SafeLoader is yaml.CSafeLoader
    text = "a: [1, 2.5, yes, null, '3']\nb: {c: 2026-12-05}\n"
    assert yamlio.load(text) == yaml.safe_load(text)


def test_each_schema_is_parsed_once_for_kinds_and_validation(monkeypatch):
    """aifb.kinds (the x-aifb-kind blocks) and aifb.schemas (validation, with every schema for
    $ref) read the same files: one parse each, not one per reader."""
    parsed = []
    real = yamlio.load

    def counting(stream):
        parsed.append(getattr(stream, "name", "<text>"))
        return real(stream)

    for cached in (yamlio.schema_document, schemas.load_schema, schemas._registry, kinds.all_kinds):
        cached.cache_clear()
    monkeypatch.setattr(yamlio, "load", counting)
    try:
        kinds.all_kinds()
        assert schemas.validation_errors({"local": {"executor": "local"}}, "targets.schema.yaml") == []
        files = sorted(schema_dir().rglob("*.schema.yaml"))
        assert sorted(parsed) == [str(p) for p in files]
    finally:
        for cached in (yamlio.schema_document, schemas.load_schema, schemas._registry,
                       kinds.all_kinds):
            cached.cache_clear()
