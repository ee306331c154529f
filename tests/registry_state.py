"""Tests that move a shared model's alias or register versions put the registry back as they found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.models.registry import ModelRegistry


@contextmanager
def registry_kept(registry: ModelRegistry, name: str) -> Iterator[None]:
    """Afterwards model ``name`` holds exactly the versions, tags and aliases it held before, however the body
    ended: versions it registered are deleted, aliases and tags it moved are set back."""
    client = registry.client
    aliases = dict(client.get_registered_model(name).aliases)
    tags = {str(v.version): dict(v.tags) for v in registry.versions(name)}
    try:
        yield
    finally:
        for alias in set(client.get_registered_model(name).aliases) - set(aliases):
            client.delete_registered_model_alias(name, alias)
        for alias, version in aliases.items():
            client.set_registered_model_alias(name, alias, str(version))
        for version in registry.versions(name):
            number = str(version.version)
            if number not in tags:
                client.delete_model_version(name, number)
                continue
            for key in set(version.tags) - set(tags[number]):
                client.delete_model_version_tag(name, number, key)
            for key, value in tags[number].items():
                if version.tags.get(key) != value:
                    client.set_model_version_tag(name, number, key, value)
