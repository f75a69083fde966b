"""Train → calibrate → save → evaluate, driven by one YAML config (`seawall detect train --config FILE`)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seawall.data.records import ResponseRecord, normalize_text
from seawall.detect.base import Detector, labelled, load_detector, make_detector
from seawall.detect.category import CATEGORY_PROMPT_SETS, category_prompt_records, record_hazard
from seawall.detect.data import DataMix, build_mix, eval_records
from seawall.detect.members import member_report
from seawall.detect.metrics import category_metrics, evaluate_scores, plot_report
from seawall.errors import SeawallError
from seawall.io import atomic_write_json

DEFAULT_EVAL_SETS = ["securebreak:test", "gptfuzz:test", "alpaca:test", "refusals:test"]
# Written beside a trained detector: what it was trained from and how long it took, so an evaluation that was
# interrupted (or is redone) needs no second training (`seawall detect train --eval-only`).
RUN_RECORD = "run.json"


class TrainConfig(BaseModel):
    """A detector run: backend + hyper-parameters, the data mix, where to write, what to evaluate on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="run name (used in reports)")
    backend: str
    params: dict[str, Any] = Field(default_factory=dict)
    data: DataMix = Field(default_factory=DataMix)
    output: str = Field(description="folder for the trained detector")
    report_dir: str | None = Field(None, description="folder for eval JSON/PNG (default: OUTPUT/eval)")
    eval_sets: list[str] = Field(default_factory=lambda: list(DEFAULT_EVAL_SETS))
    eval_max_rows: int | None = Field(
        None, ge=1, description="evaluate on a seeded sample of at most this many rows per set (slow judges)"
    )
    n_boot: int = Field(1000, ge=0)
    category_prompt_sets: list[str] = Field(
        default_factory=lambda: list(CATEGORY_PROMPT_SETS),
        description="prompt sets (NAME[:SPLIT]) whose categories also train the risk-category model",
    )
    overwrite: bool = False

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load and validate a YAML config (errors name the file and the field)."""
        path = Path(path)
        if not path.is_file():
            raise SeawallError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise SeawallError(f"{path} is not valid YAML: {error}") from None
        try:
            return cls.model_validate(raw or {})
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise SeawallError(f"{path}: {problems}") from None


def evaluate_detector(
    detector: Detector,
    records: list[ResponseRecord],
    name: str,
    out_dir: Path | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Score labelled records and build the report (JSON + PNGs in `out_dir` when given)."""
    kept = [r for r in records if r.y is not None]
    if not kept:
        raise SeawallError(f"{name}: no labelled rows to evaluate (all labels unknown)")
    pairs, y = labelled(kept)
    start = time.perf_counter()
    # A cascade also says which rows its strong member scored; an ensemble, what each member scored.
    routed = detector.score_routed(pairs) if hasattr(detector, "score_routed") else None
    voted = detector.score_with_members(pairs) if hasattr(detector, "score_with_members") else None
    p = routed[0] if routed else voted[0] if voted else detector.score_unsafe(pairs)
    elapsed = time.perf_counter() - start
    report = evaluate_scores(y, p, detector.threshold_, [r.category for r in kept], n_boot=n_boot)
    report.update(
        {
            "data": name,
            "detector_id": detector.detector_id,
            "backend": detector.backend,
            "n_unlabelled_skipped": len(records) - len(kept),
            "scoring_seconds": round(elapsed, 3),
            "thresholds": detector.thresholds_,
            "category": category_report(detector, kept, y, p, n_boot),
        }
    )
    if routed:
        report["routing"] = detector.routing_stats(routed[1], y, p, seconds=elapsed)
        report["members"] = detector.evaluate_members(pairs, y, n_boot=n_boot)  # each member alone, same rows
    if voted:
        report["members"] = {
            name: member_report(m["detector"], y, m["p"], m["scoring_seconds"], n_boot)
            for name, m in voted[1].items()
        }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        report["plots"] = plot_report(report, out_dir, name)
        atomic_write_json(out_dir / "report.json", report)
    return report


def category_report(
    detector: Detector, records: list[ResponseRecord], y: np.ndarray, p: np.ndarray, n_boot: int = 1000
) -> dict[str, Any] | None:
    """Risk-category accuracy on the unsafe rows whose hazard is known; None when the detector has no category
    model. Safe rows are left out: the category of a refusal does not change any decision.

    `accuracy` scores the category model's answer for every such row (a `none` answer is wrong), whatever the
    harm score, so it measures the category model and not the detector's recall; `flagged` scores what
    `predict_category` returns on the rows among them the detector flags (threshold `threshold_`)."""
    if getattr(detector, "category_labels", None) is None:
        return None
    index = [i for i, label in enumerate(y) if label == 1 and record_hazard(records[i])]
    rows = [records[i] for i in index]
    codes = [record_hazard(r) for r in rows]
    # Rows answering one prompt share its category; a text without a prompt (the moderation set) is its own group.
    groups = [normalize_text(r.prompt) or f"text:{normalize_text(r.response)}" for r in rows]
    topics = detector.category_model_.predict([(r.prompt, r.response) for r in rows]) if rows else []
    report = category_metrics(codes, topics, groups, n_boot=n_boot)
    report["n_unsafe_without_category"] = int(y.sum()) - len(rows)
    scores = p[index] if rows else np.zeros(0)
    flagged = [k for k, s in enumerate(scores) if s >= detector.threshold_]
    given = detector.predict_category([rows[k] for k in flagged], scores=scores[flagged]) if flagged else []
    report["flagged"] = category_metrics(
        [codes[k] for k in flagged], given, [groups[k] for k in flagged], n_boot=n_boot
    )
    return report


def training_fingerprint(config: TrainConfig) -> str:
    """sha256 of what decides a run's trained detector (backend, hyper-parameters, data mix, category prompt
    sets), not of where it is written or what it is evaluated on."""
    decisive = config.model_dump(include={"backend", "params", "data", "category_prompt_sets"})
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]


def saved_run(config: TrainConfig) -> tuple[Detector, float]:
    """The detector a finished training of `config` saved, and its training seconds; an error naming the folder
    when there is none or it was trained from another config."""
    output = Path(config.output)
    record_path = output / RUN_RECORD
    if not record_path.is_file():
        raise SeawallError(
            f"{output} holds no {RUN_RECORD}: nothing trained from this config was saved there; train it first"
        )
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SeawallError(f"{record_path} is not readable JSON: {error}") from None
    expected = training_fingerprint(config)
    if record.get("training_fingerprint") != expected:
        raise SeawallError(
            f"{output} was trained from another config (training fingerprint {record.get('training_fingerprint')},"
            f" this config {expected}): its backend, params, data or category sets differ; train it again"
        )
    return load_detector(output), float(record["train_seconds"])


def run_training(config: TrainConfig, data_dir: str | None = None, eval_only: bool = False) -> dict[str, Any]:
    """Build the mix, fit (with dev calibration), save, evaluate on every eval set; returns the summary.

    `eval_only`: evaluate the detector a finished training of this same config saved (`saved_run`) instead of
    training again; the mix is rebuilt (deterministic) for the summary's counts."""
    output = Path(config.output)
    if not eval_only and output.exists() and not config.overwrite:
        raise SeawallError(
            f"{output} already exists; set overwrite: true in the config or pick another output"
        )
    if eval_only:  # checked first: a refusal costs no data loading
        detector, train_seconds = saved_run(config)
    mix = build_mix(config.data, data_dir)
    category_rows, category_sources = training_category_rows(config, mix, data_dir)
    if not eval_only:
        detector = make_detector(config.backend, **config.params)
        start = time.perf_counter()
        detector.fit(mix["train"] + category_rows, dev=mix["dev"])
        train_seconds = time.perf_counter() - start
        # plus the time of earlier sessions when training resumed from a checkpoint
        train_seconds += detector.training_.get("history", {}).get("seconds_before_resume", 0.0)
        detector.save(output, overwrite=config.overwrite)
        record = {"name": config.name, "training_fingerprint": training_fingerprint(config)}
        atomic_write_json(output / RUN_RECORD, {**record, "train_seconds": round(train_seconds, 1)})
    report_dir = Path(config.report_dir) if config.report_dir else output.parent / f"{output.name}-eval"
    evaluations = {}
    for spec in config.eval_sets:
        name, records, _ = eval_records(spec, data_dir)
        if config.eval_max_rows and len(records) > config.eval_max_rows:
            keep = np.random.default_rng(0).choice(len(records), config.eval_max_rows, replace=False)
            records = [records[i] for i in sorted(keep)]
        report = evaluate_detector(
            detector, records, name, report_dir / name.replace(":", "-"), config.n_boot
        )
        evaluations[name] = {
            "n": report["n"],
            "metrics": report["metrics"],
            "ci95": report["ci95"],
            "per_category": report.get("per_category"),
            "category": report.get("category"),
            "routing": report.get("routing"),
            "members": report.get("members"),
            "scoring_seconds": report["scoring_seconds"],
        }
    summary = {
        "name": config.name,
        "backend": config.backend,
        "detector_id": detector.detector_id,
        "config": config.model_dump(),
        "n_train": len(mix["train"]),
        "category_prompt_rows": category_sources,
        "n_dev": len(mix["dev"]),
        "train_sources": _counts(mix["train"]),
        "dev_sources": _counts(mix["dev"]),
        "train_seconds": round(train_seconds, 1),
        "thresholds": detector.thresholds_,
        "threshold": detector.threshold_,
        "calibrator": detector.calibrator_,
        "training": detector.training_,
        "eval": evaluations,
    }
    atomic_write_json(report_dir / "summary.json", summary)
    return summary


def training_category_rows(
    config: TrainConfig, mix: dict[str, list[ResponseRecord]], data_dir: str | None = None
) -> tuple[list[ResponseRecord], dict[str, dict[str, int]]]:
    """The prompt sets' category rows for a run (label unknown: only the category model learns from them), minus
    the prompts of the mix's dev and test rows; none when the run has no category model."""
    if not config.category_prompt_sets or config.params.get("category_model", True) is False:
        return [], {}
    held_out = {normalize_text(r.prompt) for part in ("dev", "test") for r in mix[part]}
    return category_prompt_records(config.category_prompt_sets, data_dir, held_out)


def _counts(records: list[ResponseRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        bucket = out.setdefault(r.source or "(none)", {"safe": 0, "unsafe": 0, "unknown": 0})
        bucket[r.label] += 1
    return out


def evaluate_saved(model_dir: str, data: str, out_dir: str | None, data_dir: str | None, n_boot: int) -> dict:
    """Load a saved detector and evaluate it on NAME[:SPLIT] or FILE."""
    detector = load_detector(model_dir)
    name, records, read_report = eval_records(data, data_dir)
    report = evaluate_detector(detector, records, name, Path(out_dir) if out_dir else None, n_boot)
    report["read_report"] = read_report
    if out_dir:
        atomic_write_json(Path(out_dir) / "report.json", report)
    return report


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Metric rows (value and CI) for printing."""
    rows = []
    for key, value in report["metrics"].items():
        ci = report.get("ci95", {}).get(key)
        rows.append(
            {
                "metric": key,
                "value": value,
                "ci95": "–" if not ci or np.isnan(ci[0]) else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
            }
        )
    return rows
