"""The Detector contract: a scikit-learn-style estimator that scores (prompt, response) pairs for harm.

Every backend subclasses `Detector`, implements `_fit` and `_score`, and stores its learned state through
`_state` / `_load_state` (JSON-able values and numpy arrays; arrays go to safetensors). Calibration and the decision
threshold live here, and so does the risk-category model (`seawall.detect.category`, hazard codes of
`seawall.data.taxonomy`), so every backend gets the same operating points, categories and on-disk format:

    DIR/detector.json        backend name, detector_id, seawall version, hyper-parameters, JSON state, calibration
    DIR/arrays.safetensors   numpy arrays of the learned state (when the backend has any); the risk-category
                             model's arrays carry the prefix "category."
    DIR/model/               backend-specific weights (e.g. an HF folder with model.safetensors)

No pickle anywhere: loading a detector folder never executes code from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from seawall import __version__
from seawall.data.records import ResponseRecord
from seawall.errors import ModelError, SeawallError
from seawall.io import atomic_dir, atomic_write_json
from seawall.registry import Registry

CONFIG_FILE = "detector.json"
ARRAYS_FILE = "arrays.safetensors"
CATEGORY_PREFIX = "category."
FORMAT_VERSION = 1

DETECTORS: Registry[type[Detector]] = Registry("detector backend")

Pair = tuple[str, str]


def as_pairs(items: Iterable[Any]) -> list[Pair]:
    """Normalise ResponseRecords, (prompt, response) tuples or {"prompt", "response"} dicts into string pairs.

    A missing prompt becomes "" (the detectors then judge the response alone); a missing or non-string response
    is an error naming the position, because scoring nothing as "safe" would hide a broken input.
    """
    pairs: list[Pair] = []
    for index, item in enumerate(items):
        if isinstance(item, ResponseRecord):
            prompt, response = item.prompt, item.response
        elif isinstance(item, dict):
            prompt, response = item.get("prompt"), item.get("response")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            prompt, response = item
        else:
            raise SeawallError(
                f"item {index}: expected a ResponseRecord, a (prompt, response) pair or a dict with "
                f"'prompt' and 'response', got {type(item).__name__}"
            )
        if prompt is None or (isinstance(prompt, float) and math.isnan(prompt)):
            prompt = ""
        if not isinstance(response, str):
            if response is None or (isinstance(response, float) and math.isnan(response)):
                response = ""
            else:
                raise SeawallError(f"item {index}: response must be a string, got {type(response).__name__}")
        if not isinstance(prompt, str):
            raise SeawallError(f"item {index}: prompt must be a string, got {type(prompt).__name__}")
        pairs.append((prompt, response))
    return pairs


def labelled(records: Sequence[ResponseRecord]) -> tuple[list[Pair], np.ndarray]:
    """The (pairs, y) of the records whose label is safe or unsafe; unknown labels are dropped."""
    kept = [r for r in records if r.y is not None]
    return as_pairs(kept), np.asarray([r.y for r in kept], dtype=np.int64)


class Detector(BaseEstimator):
    """Base class of every detector backend: fit, predict_proba, predict, save; calibration and threshold.

    Subclasses declare their hyper-parameters in `__init__` (sklearn convention: stored unchanged, no logic) and
    must include `calibration`, `threshold_strategy`, `target_recall` and `category_model`, which this class uses.
    """

    backend: str = ""

    # Hyper-parameters shared by every backend (subclasses repeat them in their own __init__ signature).
    calibration: str
    threshold_strategy: str
    target_recall: float
    # Train the risk-category model in `fit` (a backend that does not declare the parameter gets one as well).
    category_model: bool = True

    # ---- to implement ------------------------------------------------------------------------------------------
    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: tuple[list[Pair], np.ndarray] | None) -> None:
        raise NotImplementedError

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        """Raw P(unsafe) of each pair, before calibration, shape (n,)."""
        raise NotImplementedError

    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The learned state as (JSON-able dict, arrays); may also write backend files into `folder`."""
        return {}, {}

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what `_state` saved."""

    # ---- public API ----------------------------------------------------------------------------------------------
    def fit(self, records: Sequence[ResponseRecord], dev: Sequence[ResponseRecord] | None = None) -> Detector:
        """Learn from labelled records; with `dev`, also calibrate probabilities and pick the threshold on it."""
        pairs, y = labelled(records)
        if len(y) == 0 and self._needs_labels():
            raise SeawallError(
                "no labelled records to fit on (every label is 'unknown' or the list is empty)"
            )
        if self._needs_labels() and len(set(y.tolist())) < 2:
            raise SeawallError(
                f"training data has a single class ({int(y[0])}); need both safe and unsafe rows"
            )
        dev_xy = labelled(dev) if dev is not None else None
        vars(self).pop("_learned_digest", None)
        self.classes_ = np.array([0, 1])
        self.threshold_ = 0.5
        self.thresholds_: dict[str, float] = {"default": 0.5}
        self.calibrator_: dict[str, Any] = {"method": "none"}
        self.training_: dict[str, Any] = {"n_train": len(y), "n_unsafe": int(y.sum()) if len(y) else 0}
        self._fit(pairs, y, dev_xy)
        self._fit_categories(records)
        if dev_xy is not None and len(dev_xy[1]) and len(set(dev_xy[1].tolist())) == 2:
            self.calibrate(dev)
        self.detector_id_ = self._make_id()
        return self

    def _needs_labels(self) -> bool:
        return True

    def _fit_categories(self, records: Sequence[ResponseRecord]) -> None:
        self.category_model_ = None
        if not self.category_model:
            return
        from seawall.detect.category import fit_category_model

        self.category_model_, self.training_["category"] = fit_category_model(
            records, seed=getattr(self, "seed", 0)
        )

    def predict_proba(self, pairs: Iterable[Any]) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): column 0 = P(safe), column 1 = P(unsafe)."""
        p = self.score_unsafe(pairs)
        return np.stack([1.0 - p, p], axis=1)

    def score_unsafe(self, pairs: Iterable[Any]) -> np.ndarray:
        """Calibrated P(unsafe) as a 1-D array (the column the threshold applies to)."""
        self._check_fitted()
        pairs = as_pairs(pairs)
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        raw = np.asarray(self._score(pairs), dtype=np.float64)
        from seawall.detect.calibration import apply_calibrator

        return apply_calibrator(self.calibrator_, raw)

    def raw_score(self, pairs: Iterable[Any]) -> np.ndarray:
        """Uncalibrated P(unsafe) (what the backend itself outputs)."""
        self._check_fitted()
        pairs = as_pairs(pairs)
        return np.asarray(self._score(pairs), dtype=np.float64) if pairs else np.zeros(0)

    def predict(self, pairs: Iterable[Any]) -> np.ndarray:
        """1 = unsafe, 0 = safe, using the stored threshold on the calibrated probability."""
        return (self.score_unsafe(pairs) >= self.threshold_).astype(np.int64)

    def calibrate(self, dev: Sequence[ResponseRecord], method: str | None = None) -> dict[str, Any]:
        """Fit the probability calibrator and the operating thresholds on labelled dev records; returns a summary."""
        from seawall.detect.calibration import choose_thresholds, fit_calibrator

        self._check_fitted()
        pairs, y = labelled(dev)
        if len(set(y.tolist())) < 2:
            raise SeawallError("calibration data needs both safe and unsafe labelled rows")
        raw = np.asarray(self._score(pairs), dtype=np.float64)
        self.calibrator_ = fit_calibrator(raw, y, method or self.calibration)
        from seawall.detect.calibration import apply_calibrator

        p = apply_calibrator(self.calibrator_, raw)
        # Each dev row's source, so "source_balanced" can weigh every kind of text equally.
        sources = np.asarray([r.source or "unknown" for r in dev if r.y is not None])
        self.thresholds_ = choose_thresholds(p, y, target_recall=self.target_recall, groups=sources)
        self.set_operating_point(self.threshold_strategy)  # also refreshes detector_id
        return {
            "calibrator": self.calibrator_["method"],
            "thresholds": dict(self.thresholds_),
            "n_dev": len(y),
        }

    def set_operating_point(self, name: str) -> None:
        """Use one of the calibrated thresholds ("recall", "f1", "default") or a number given as a string.

        The threshold decides every verdict, so detector_id is recomputed with it.
        """
        self.threshold_ = self._threshold_for(name)
        self.detector_id_ = self._make_id()

    def _threshold_for(self, name: str) -> float:
        if name in self.thresholds_:
            return float(self.thresholds_[name])
        try:
            value = float(name)
        except ValueError:
            known = ", ".join(sorted(self.thresholds_))
            raise SeawallError(
                f"unknown operating point {name!r}; known: {known} or a number in [0, 1]"
            ) from None
        if not 0.0 <= value <= 1.0:
            raise SeawallError(f"threshold {value} is outside [0, 1]")
        return value

    def predict_category(
        self, pairs: Iterable[Any], scores: Sequence[float] | None = None, threshold: float | None = None
    ) -> list[str | None]:
        """Hazard code (`seawall.data.taxonomy.HAZARDS`) of each pair the detector judges unsafe (calibrated
        P(unsafe) ≥ `threshold`, default `threshold_`): the category model's most probable hazard; None when the
        model finds a benign topic most probable, for a pair judged safe, and for every pair without a category
        model.

        `scores` are the pairs' calibrated P(unsafe) when the caller already has them (saves scoring twice).
        """
        from seawall.detect.category import categorize

        self._check_fitted()
        pairs = as_pairs(pairs)
        model = getattr(self, "category_model_", None)
        if model is None or not pairs:
            return [None] * len(pairs)
        p = self.score_unsafe(pairs) if scores is None else np.asarray(scores, dtype=np.float64)
        if p.shape != (len(pairs),):
            raise SeawallError(f"predict_category got {p.shape} scores for {len(pairs)} pairs")
        return categorize(model, pairs, p >= (self.threshold_ if threshold is None else threshold))

    @property
    def category_labels(self) -> list[str] | None:
        """The hazard codes `predict_category` can return; None when the detector has no category model."""
        model = getattr(self, "category_model_", None)
        return list(model.hazard_labels) if model is not None else None

    @property
    def detector_id(self) -> str:
        """A short stable identifier: backend, seawall version and a hash of the params and the learned state.

        The learned state is every fitted attribute (sklearn's trailing underscore: weights, arrays, the category
        model) hashed by its bytes, plus the calibrator, the thresholds and the threshold in use. `fit`, `calibrate`
        and `set_operating_point` refresh it; a loaded detector keeps the id it was saved with.
        """
        return getattr(self, "detector_id_", f"{self.backend}-unfitted")

    def _make_id(self) -> str:
        digest = hashlib.sha256()
        _feed(
            digest,
            {
                "params": _jsonable(self.get_params()),
                "calibrator": self.calibrator_,
                "thresholds": self.thresholds_,
                "threshold": self.threshold_,
            },
        )
        # Hashing weights costs a pass over them; they only change in fit, which drops this memo.
        if "_learned_digest" not in vars(self):
            self._learned_digest = self._hash_learned_state()
        digest.update(self._learned_digest.encode())
        return f"{self.backend}-{__version__}-{digest.hexdigest()[:12]}"

    def _hash_learned_state(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(vars(self)):
            if name.endswith("_") and not name.startswith("_") and name not in _NOT_LEARNED_STATE:
                digest.update(name.encode())
                _feed(digest, getattr(self, name))
        return digest.hexdigest()

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise SeawallError(f"this {self.backend} detector is not fitted: call fit() or load a saved one")

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the detector to `folder` atomically (JSON config + safetensors); returns the folder."""
        from safetensors.numpy import save_file

        self._check_fitted()
        folder = Path(folder)
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            state, arrays = self._state(tmp)
            category_state = None
            if getattr(self, "category_model_", None) is not None:
                category_state, category_arrays = self.category_model_.state()
                arrays = {**arrays, **{CATEGORY_PREFIX + k: v for k, v in category_arrays.items()}}
            config = {
                "format_version": FORMAT_VERSION,
                "backend": self.backend,
                "detector_id": self.detector_id,
                "seawall_version": __version__,
                "params": _jsonable(self.get_params()),
                "threshold": self.threshold_,
                "thresholds": self.thresholds_,
                "threshold_strategy": self.threshold_strategy,
                "calibrator": self.calibrator_,
                "training": self.training_,
                "state": state,
                "category_model": category_state,
                "arrays": sorted(arrays),
            }
            if arrays:
                save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / ARRAYS_FILE))
            atomic_write_json(tmp / CONFIG_FILE, config)
        return folder


# Fitted attributes that are not learned state: the id itself, hashed separately (calibration), or training logs.
_NOT_LEARNED_STATE = {"detector_id_", "calibrator_", "thresholds_", "threshold_", "training_", "history_"}


def _feed(digest: Any, value: Any) -> None:
    """Stream `value` into a hashlib digest: arrays and tensors as dtype, shape and raw bytes (no copy when
    contiguous), torch modules by their state_dict, objects with `state()` by that state, the rest as JSON.

    Objects none of these fit (a tokenizer) count by type only: their content follows from the params.
    """
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"ndarray {array.dtype.str} {array.shape}".encode())
        if array.dtype.hasobject:
            _feed(digest, array.tolist())
        else:
            digest.update(array.reshape(-1).view(np.uint8))
    elif type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        import torch

        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif callable(getattr(value, "state_dict", None)):
        for name, tensor in value.state_dict().items():
            digest.update(name.encode())
            _feed(digest, tensor)
    elif callable(getattr(value, "state", None)):
        state, arrays = value.state()
        _feed(digest, state)
        _feed(digest, dict(arrays))
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            digest.update(json.dumps(str(key)).encode())
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif isinstance(value, (str, int, float, bool, np.generic)) or value is None:
        digest.update(json.dumps(_jsonable(value)).encode())
    else:
        digest.update(f"<{type(value).__qualname__}>".encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def make_detector(backend: str, **params: Any) -> Detector:
    """Build an unfitted detector of the named backend with the given hyper-parameters."""
    import seawall.detect  # noqa: F401  (registers the backends)

    cls = DETECTORS.get(backend)
    try:
        return cls(**params)
    except TypeError as error:
        names = ", ".join(sorted(cls().get_params()))
        raise SeawallError(
            f"bad parameters for detector backend {backend!r}: {error}; known: {names}"
        ) from None


def load_detector(folder: str | os.PathLike) -> Detector:
    """Load a detector saved with `Detector.save` (safetensors + JSON only; no code is executed from the folder)."""
    from safetensors.numpy import load_file

    import seawall.detect  # noqa: F401  (registers the backends)

    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(
            f"{folder} is not a seawall detector folder (no {CONFIG_FILE}); train one with `seawall detect train`"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_path} is not valid JSON: {error}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{config_path}: format_version {config.get('format_version')!r} is not supported "
            f"(this seawall reads {FORMAT_VERSION})"
        )
    detector = make_detector(config["backend"], **config.get("params", {}))
    arrays = load_file(str(folder / ARRAYS_FILE)) if config.get("arrays") else {}
    missing = set(config.get("arrays", [])) - set(arrays)
    if missing:
        raise ModelError(f"{folder / ARRAYS_FILE} lacks arrays {sorted(missing)}; the folder is incomplete")
    detector.classes_ = np.array([0, 1])
    detector.threshold_ = float(config["threshold"])
    detector.thresholds_ = {k: float(v) for k, v in config.get("thresholds", {}).items()}
    detector.calibrator_ = config.get("calibrator", {"method": "none"})
    detector.training_ = config.get("training", {})
    detector.detector_id_ = config.get("detector_id", f"{detector.backend}-unknown")
    category_arrays = {
        k[len(CATEGORY_PREFIX) :]: v for k, v in arrays.items() if k.startswith(CATEGORY_PREFIX)
    }
    backend_arrays = {k: v for k, v in arrays.items() if not k.startswith(CATEGORY_PREFIX)}
    detector._load_state(folder, config.get("state", {}), backend_arrays)
    # Folders saved before category models existed have no "category_model" entry: predict_category gives None.
    detector.category_model_ = None
    if config.get("category_model"):
        from seawall.detect.category import CategoryModel

        try:
            detector.category_model_ = CategoryModel.from_state(config["category_model"], category_arrays)
        except (KeyError, ValueError) as error:
            raise ModelError(
                f"{config_path}: the category model is incomplete ({error}); re-save the detector"
            ) from None
    return detector
