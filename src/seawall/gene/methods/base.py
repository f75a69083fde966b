"""The interface every restoration method implements (mergekit-style: one file per method, one registry)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from seawall.errors import SeawallError


@dataclass
class MethodResult:
    """What a method wrote (`merged` HF folder or `peft` adapter) and a JSON-able report of its decisions."""

    output: Path
    format: str
    report: dict[str, Any] = field(default_factory=dict)


class Method(ABC):
    """A restoration method: hyper-parameters in a pydantic config, `apply` writes the restored model."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    source: ClassVar[str]

    def __init__(self, config: BaseModel | dict[str, Any] | None = None) -> None:
        if isinstance(config, self.config_class):
            self.config = config
        else:
            try:
                self.config = self.config_class.model_validate(config or {})
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise SeawallError(f"{self.name} config: {where}: {first['msg']}") from error

    @abstractmethod
    def apply(self, target: str | Path | None, output: str | Path, **inputs: Any) -> MethodResult:
        """Write the restored model for `target` to `output`; `inputs` name the other models/adapters needed."""

    def _need(self, inputs: dict[str, Any], *names: str) -> list[Any]:
        missing = [n for n in names if inputs.get(n) is None]
        if missing:
            raise SeawallError(f"method {self.name!r} needs: {', '.join(missing)}")
        return [inputs[n] for n in names]
