"""Name → method class; adding a method is one new file and one import line here."""

from __future__ import annotations

from seawall.gene.methods.base import Method
from seawall.registry import Registry

METHODS: Registry[type[Method]] = Registry("restore method")


def get_method(name: str) -> type[Method]:
    """The method class registered under `name` ('safegene', 'resta', 'safe-lora', 'safemerge')."""
    from seawall.gene.methods import resta, safe_lora, safegene, safemerge  # noqa: F401  (registration)

    return METHODS.get(name)
