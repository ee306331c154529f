"""The settings documented from the Settings model itself: the README table and ``.env.example``."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from pipeline.settings import Settings


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    value: Any = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if value is None or isinstance(value, SecretStr) or value == "" or value == []:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def env_example() -> str:
    lines = [
        "# tradeforge settings: copy to .env and uncomment what you change. Values shown are the defaults.",
        "# .env is git-ignored; secrets live only there or in the environment.",
    ]
    for name, field in Settings.model_fields.items():
        lines += ["", f"# {field.description}", f"# TRADEFORGE_{name.upper()}={_default(name)}"]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(name)
        shown = f"`{default}`" if default else "*(empty)*"
        rows.append(f"| `{name}` | `TRADEFORGE_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"
