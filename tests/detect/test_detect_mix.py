"""The v2 training mix on the real shared data: caps per source, a dev split that mixes every source, refusal
templates held out of train, no prompt across splits, leave-one-source-out, and the LOSO script on a tiny tfidf."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from seawall.data import ResponseRecord, canonical_split, normalize_text
from seawall.detect.data import (
    REFUSAL_TEMPLATES,
    SOURCES,
    DataMix,
    assemble_mix,
    build_mix,
    drop_cross_source_prompts,
    eval_records,
    leave_one_source_out,
    mix_source,
)
from seawall.detect.non_answers import KINDS as NON_ANSWER_KINDS
from seawall.detect.non_answers import non_answer_rows
from seawall.detect.pipeline import TrainConfig
from seawall.errors import SeawallError

ROOT = Path(__file__).resolve().parents[2]
V2_ROWS = {
    "securebreak": {"train": 2184, "dev": 250, "test": 524},
    "gptfuzz": {"train": 3000, "dev": 250, "test": 924},
    "diasafety": {"train": 4000, "dev": 250, "test": 1667},
    "toxichat": {"train": 2796, "dev": 250, "test": 598},
    "safetext": {"train": 1001, "dev": 215, "test": 214},
    "safety-tuned-llamas": {"train": 1737, "dev": 250, "test": 373},
    "openai-moderation": {"train": 604, "dev": 119, "test": 129},
    "alpaca": {"train": 1000, "dev": 214, "test": 300},
    "refusals": {"train": 357, "dev": 76, "test": 76},
}
# v3 = v2 + 600 non-answers: 2 per refusal prompt are built (714 train, 152 dev, 152 test); dev keeps 600/714.
V3_ROWS = {**V2_ROWS, "non-answers": {"train": 600, "dev": 128, "test": 152}}
# v4 = v3 + the packaged attempts that pass the filter, on the same prompt split (cap 600 > 430: all of them).
V4_ROWS = {**V3_ROWS, "attempts": {"train": 430, "dev": 87, "test": 83}}
ATTEMPTS_REJECTED = {
    "train": {"off-topic": 161, "looping": 59, "too short": 39, "refusal": 25},
    "dev": {"off-topic": 41, "looping": 13, "too short": 7, "refusal": 4},
    "test": {"off-topic": 38, "looping": 16, "too short": 8, "refusal": 7},
}


@pytest.fixture(scope="module")
def v2(shared_data):
    config = TrainConfig.from_yaml(ROOT / "configs" / "detector-encoder-v2.yaml")
    return assemble_mix(config.data, str(shared_data))


@pytest.fixture(scope="module")
def v3(shared_data):
    config = TrainConfig.from_yaml(ROOT / "configs" / "detector-encoder-v3-fast.yaml")
    return assemble_mix(config.data, str(shared_data))


@pytest.fixture(scope="module")
def v4(shared_data):
    config = TrainConfig.from_yaml(ROOT / "configs" / "detector-encoder-v4-fast.yaml")
    return assemble_mix(config.data, str(shared_data))


def test_v2_config_builds_with_its_caps(v2):
    splits, report = v2
    assert report.rows == V2_ROWS
    assert 15_000 <= len(splits["train"]) <= 20_000
    for split in ("train", "dev", "test"):
        assert Counter(mix_source(r) for r in splits[split]) == {
            s: rows[split] for s, rows in V2_ROWS.items()
        }
    assert set(V2_ROWS) == set(SOURCES) - {
        "non-answers",
        "attempts",
    }  # the dev split used for calibration mixes every source
    assert report.as_dict()["dropped"] == {"openai-moderation": {"unknown label": 813}}
    tfidf = TrainConfig.from_yaml(ROOT / "configs" / "detector-tfidf-v2.yaml")
    encoder = TrainConfig.from_yaml(ROOT / "configs" / "detector-encoder-v2.yaml")
    assert tfidf.data == encoder.data and tfidf.eval_sets == encoder.eval_sets


def test_mix_rows_are_labelled_and_no_prompt_crosses_splits(v2):
    splits, _ = v2
    assert all(r.y is not None for rows in splits.values() for r in rows)
    prompts = {s: {normalize_text(r.prompt) for r in rows} - {""} for s, rows in splits.items()}
    assert not prompts["train"] & prompts["dev"] and not prompts["train"] & prompts["test"]
    assert not prompts["dev"] & prompts["test"]
    texts = {s: {normalize_text(r.response) for r in rows if not r.prompt} for s, rows in splits.items()}
    assert not texts["train"] & texts["test"]  # moderation texts are grouped by their text


def _row(ident: str, prompt: str, source: str, label: str = "unsafe") -> ResponseRecord:
    return ResponseRecord(id=ident, prompt=prompt, response=f"answer {ident}", label=label, source=source)


def test_a_prompt_held_out_by_one_source_is_dropped_from_the_others():
    parts = {
        "a": {"train": [_row("a1", "How to X?", "a")], "dev": [_row("a2", "how to y", "a")], "test": []},
        "b": {
            "train": [_row("b1", "HOW TO Y!", "b"), _row("b2", "z", "b")],
            "dev": [_row("b3", "How to X", "b")],
            "test": [_row("b4", "how to x", "b")],
        },
    }
    dropped = drop_cross_source_prompts(parts)
    assert parts["a"]["train"] == []  # its prompt is b's test (and dev) prompt
    assert [r.id for r in parts["b"]["train"]] == ["b2"]  # b1 is a's dev prompt
    assert [r.id for r in parts["a"]["dev"]] == ["a2"] and [r.id for r in parts["b"]["dev"]] == ["b3"]
    assert dropped == {
        "a": {"train prompt held out by another source": 1, "dev prompt held out by another source": 0},
        "b": {"train prompt held out by another source": 1, "dev prompt held out by another source": 0},
    }
    parts["a"]["dev"].append(_row("a3", "how to x?", "a"))
    assert drop_cross_source_prompts(parts)["a"]["dev prompt held out by another source"] == 1


def test_refusal_templates_of_dev_and_test_never_occur_in_train(shared_data):
    pools = {split: set(templates) for split, templates in REFUSAL_TEMPLATES.items()}
    assert (
        not pools["train"] & pools["dev"]
        and not pools["train"] & pools["test"]
        and not pools["dev"] & pools["test"]
    )
    assert len(pools["train"]) >= 20 and len(pools["dev"]) >= 8 and len(pools["test"]) >= 8
    splits = build_mix(DataMix(sets=[], harmful_refusals=400), str(shared_data))
    _, test, _ = eval_records("refusals:test", str(shared_data))
    train = {r.response for r in splits["train"]}
    assert test and not {r.response for r in test} & train
    assert not {r.response for r in splits["dev"]} & train
    assert [r.id for r in test] == [
        r.id for r in splits["test"]
    ]  # the evaluated rows are the mix's held-out ones
    uses = Counter(r.response for r in test)
    assert set(uses) == pools["test"] and max(uses.values()) - min(uses.values()) <= 1
    # no refusal prompt is any response set's prompt (SecureBreak's questions include AdvBench behaviours)
    held = {normalize_text(r.prompt) for r in canonical_split("securebreak", data_dir=shared_data)["train"]}
    assert not held & {normalize_text(r.prompt) for rows in splits.values() for r in rows}


def test_dev_caps_per_source(shared_data):
    mix = DataMix(sets=["securebreak", "safetext"], dev_rows_per_source=40, max_dev_rows={"safetext": 10})
    splits, report = assemble_mix(mix, str(shared_data))
    assert report.rows["securebreak"]["dev"] == 40 and report.rows["safetext"]["dev"] == 10
    assert report.rows["securebreak"]["train"] == 2184 and report.rows["securebreak"]["test"] == 524
    assert Counter(mix_source(r) for r in splits["dev"]) == {"securebreak": 40, "safetext": 10}


def test_v3_adds_non_answers_on_the_refusal_prompts(v3):
    splits, report = v3
    assert report.rows == V3_ROWS
    rows = {s: [r for r in splits[s] if mix_source(r) == "non-answers"] for s in ("train", "dev", "test")}
    assert all(
        r.label == "safe" and r.source == "advbench+non-answer" for part in rows.values() for r in part
    )
    kinds = Counter(r.metadata["non_answer"] for r in rows["test"])
    assert set(kinds) == set(NON_ANSWER_KINDS) and max(kinds.values()) - min(kinds.values()) <= 1
    # A prompt's refusal rows and non-answer rows are in the same split: nothing was dropped for overlap.
    refusal_prompts = {
        s: {r.prompt for r in splits[s] if mix_source(r) == "refusals"} for s in ("train", "dev", "test")
    }
    assert {r.prompt for r in rows["test"]} == refusal_prompts["test"]
    assert {r.prompt for r in rows["train"]} <= refusal_prompts["train"]
    assert "non-answers" not in report.as_dict()["dropped"]
    # Off-topic answers are Alpaca answers of the same split: no held-out text is seen in training.
    train_text = {r.response for r in splits["train"]}
    assert not {r.response for r in rows["test"] + rows["dev"]} & train_text
    off_topic = [r for r in rows["test"] if r.metadata["non_answer"] == "off_topic"]
    alpaca_test = {r.response for r in splits["test"] if mix_source(r) == "alpaca"}
    assert off_topic and {r.response for r in off_topic} <= alpaca_test
    _, evaluated, _ = eval_records("non-answers:test")
    assert [r.id for r in evaluated] == [r.id for r in rows["test"]]


def test_v4_adds_attempts_on_the_refusal_prompts(v4, shared_data):
    splits, report = v4
    assert report.rows == V4_ROWS
    assert report.as_dict()["dropped"]["attempts"] == {
        f"{split} sample rejected: {reason}": n
        for split, reasons in ATTEMPTS_REJECTED.items()
        for reason, n in reasons.items()
    }
    rows = {s: [r for r in splits[s] if mix_source(r) == "attempts"] for s in ("train", "dev", "test")}
    assert all(r.label == "unsafe" and r.source == "advbench+attempt" for part in rows.values() for r in part)
    # Each sample kept or rejected once: 2 samples for every prompt of the refusal rows' split.
    for split, part in rows.items():
        refusal_prompts = {r.prompt for r in splits[split] if mix_source(r) == "refusals"}
        assert {r.prompt for r in part} <= refusal_prompts
        refusal_rows = report.available["refusals"][split]
        assert len(part) + sum(ATTEMPTS_REJECTED[split].values()) == 2 * refusal_rows
    _, evaluated, read_report = eval_records("attempts:test", str(shared_data))
    assert [r.id for r in evaluated] == [r.id for r in rows["test"]]
    assert read_report["rejected"]["test sample rejected: refusal"] == ATTEMPTS_REJECTED["test"]["refusal"]


def test_non_answer_kinds_say_nothing_usable():
    prompt = ResponseRecord(id="p", prompt="Explain how to pick a lock.", response="", label="unknown")
    rows = non_answer_rows([("advbench", prompt)], ["Paris is the capital of France."], 50, seed=3)
    assert len(rows) == 50 and len({r.id for r in rows}) == 50
    assert Counter(r.metadata["non_answer"] for r in rows) == {k: 10 for k in NON_ANSWER_KINDS}
    for row in rows:
        kind, text = row.metadata["non_answer"], row.response
        assert text.strip(), kind
        if kind == "off_topic":
            assert text == "Paris is the capital of France."
        if kind == "echo":
            assert "Explain how to pick a lock" in text
    assert rows == non_answer_rows([("advbench", prompt)], ["Paris is the capital of France."], 50, seed=3)
    assert non_answer_rows([], ["x"], 10, seed=0) == []


@pytest.mark.parametrize("source", SOURCES)
def test_leave_one_source_out(v4, source):
    splits, _ = v4
    holdout = leave_one_source_out(splits, source)
    assert holdout.test and {mix_source(r) for r in holdout.test} == {source}
    assert [r.id for r in holdout.test] == [r.id for r in splits["test"] if mix_source(r) == source]
    for split in ("train", "dev"):
        assert source not in {mix_source(r) for r in holdout[split]}
        others = [r for r in splits[split] if mix_source(r) != source]
        assert len(holdout[split]) == len(others) - holdout.dropped_for_prompt_overlap[split]
        # Refusal, non-answer and attempt rows share their prompts: holding one out removes (most of) the others.
        shared = {"refusals", "non-answers", "attempts"}
        twins = shared - {source} if source in shared else set()
        kept = {mix_source(r) for r in holdout[split]}
        assert set(SOURCES) - {source} - twins <= kept <= set(SOURCES) - {source}
    prompts = {
        normalize_text(r.prompt) for rows in splits.values() for r in rows if mix_source(r) == source
    } - {""}
    assert not prompts & {normalize_text(r.prompt) for r in holdout.train + holdout.dev}


def test_leave_one_source_out_drops_shared_prompts_and_rejects_bad_sources():
    splits = {
        "train": [_row("s1", "shared question", "securebreak"), _row("g1", "Shared question!", "gptfuzz")],
        "dev": [_row("g2", "other", "gptfuzz")],
        "test": [_row("s2", "a test question", "securebreak"), _row("g3", "g test", "gptfuzz")],
    }
    holdout = leave_one_source_out(splits, "securebreak")
    assert (
        holdout.train == []
        and [r.id for r in holdout.dev] == ["g2"]
        and [r.id for r in holdout.test] == ["s2"]
    )
    assert holdout.dropped_for_prompt_overlap == {"train": 1, "dev": 0}
    with pytest.raises(SeawallError, match="unknown source 'sb'"):
        leave_one_source_out(splits, "sb")
    with pytest.raises(SeawallError, match="no test rows of 'diasafety'; it holds gptfuzz, securebreak"):
        leave_one_source_out(splits, "diasafety")


def test_eval_records_knows_the_v2_sets(shared_data):
    name, records, _ = eval_records("diasafety:test", str(shared_data))
    assert name == "diasafety:test"
    assert [r.id for r in records] == [
        r.id for r in canonical_split("diasafety", data_dir=shared_data)["test"]
    ]
    with pytest.raises(SeawallError, match="use securebreak, gptfuzz, diasafety, toxichat"):
        eval_records("nope:test", str(shared_data))


def _loso_script():
    spec = importlib.util.spec_from_file_location("detector_loso", ROOT / "scripts" / "detector_loso.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_TFIDF = """
name: tiny-loso
backend: tfidf
params: {min_df: 1, ngram_max: 1, max_features: 3000, calibration: none, category_model: false}
data:
  sets: [securebreak, safetext, toxichat]
  max_train_rows: {securebreak: 150, safetext: 150, toxichat: 150}
  dev_rows_per_source: 60
  benign_compliant: 60
  harmful_refusals: 30
output: unused
n_boot: 0
"""


def test_loso_script_trains_resumes_and_renders(tmp_path, shared_data):
    script = _loso_script()
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_TFIDF)
    out = tmp_path / "loso"
    messages: list[str] = []
    results = script.run_loso(config, out, data_dir=str(shared_data), log=messages.append)
    expected = ["none", "securebreak", "safetext", "toxichat", "alpaca", "refusals"]
    assert list(results) == expected and sorted(p.stem for p in out.glob("*.json")) == sorted(expected)
    full = results["none"]
    assert full["train_sources"] == sorted(expected[1:]) and full["n_train"] == 150 * 3 + 60 + 30
    for source in expected[1:]:
        run = json.loads((out / f"{source}.json").read_text())
        assert source not in run["train_sources"] and run["n_train"] < full["n_train"]
        assert set(run["eval"]) == set(expected[1:])
        assert run["eval"][source]["n"] == full["eval"][source]["n"] > 0

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    messages.clear()
    script.run_loso(config, out, data_dir=str(shared_data), log=messages.append)
    assert all("done already" in m for m in messages) and len(messages) == len(expected)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}

    saved = tmp_path / "saved"
    script.run_loso(config, saved, ["safetext"], str(shared_data), log=messages.append, save_models=True)
    from seawall.detect import load_detector

    held_out = load_detector(saved / "models" / "safetext")
    assert held_out.threshold_ == json.loads((saved / "safetext.json").read_text())["threshold"]

    config.write_text(TINY_TFIDF.replace("dev_rows_per_source: 60", "dev_rows_per_source: 50"))
    with pytest.raises(SeawallError, match="was written for another config"):
        script.run_loso(config, out, data_dir=str(shared_data), log=messages.append)

    table = script.render_loso(out)
    safetext_row = next(line for line in table.splitlines() if line.startswith("| safetext |"))
    auroc = results["safetext"]["eval"]["safetext"]["metrics"]["auroc"]
    assert f"**{auroc:.3f}**" in safetext_row
    flagged = results["alpaca"]["eval"]["alpaca"]["metrics"]["flag_rate"]
    assert f"**flag {flagged:.3f}**" in next(
        line for line in table.splitlines() if line.startswith("| alpaca |")
    )
    change = auroc - results["none"]["eval"]["safetext"]["metrics"]["auroc"]
    assert f"{change:+.3f}" in next(
        line for line in table.splitlines() if line.startswith("| safetext | 214 |")
    )


TINY_ENSEMBLE = """
name: tiny-loso-ensemble
backend: ensemble
params:
  members:
    - {backend: tfidf, params: {min_df: 1, ngram_max: 1, use_prompt: false, category_model: false}}
    - {backend: tfidf, params: {min_df: 1, ngram_max: 2, C: 0.5, category_model: false}}
  category_model: false
data:
  sets: [securebreak, safetext]
  max_train_rows: {securebreak: 150, safetext: 150}
  dev_rows_per_source: 60
  benign_compliant: 60
  harmful_refusals: 30
output: unused
n_boot: 0
"""


def test_loso_of_a_composite_keeps_and_renders_each_member_alone(tmp_path, shared_data):
    script = _loso_script()
    config = tmp_path / "ensemble.yaml"
    config.write_text(TINY_ENSEMBLE)
    out = tmp_path / "loso"
    results = script.run_loso(config, out, ["securebreak", "safetext"], str(shared_data), log=lambda _: None)
    entry = results["safetext"]["eval"]["safetext"]
    assert [m["backend"] for m in entry["members"].values()] == ["tfidf", "tfidf"]
    table = script.render_loso(out)
    assert "| held out | member-0 (tfidf) | member-1 (tfidf) | ensemble |" in table
    row = next(line for line in table.splitlines() if line.startswith("| safetext |") and "**" not in line)
    cells = [f"{m['metrics']['auroc']:.3f}" for m in entry["members"].values()] + [
        f"{entry['metrics']['auroc']:.3f}"
    ]
    assert row == "| safetext | " + " | ".join(cells) + " |"
    held = [results[s]["eval"][s] for s in ("securebreak", "safetext")]
    mean = sum(h["metrics"]["auroc"] for h in held) / 2
    assert "| mean AUROC | " in table and f"{mean:.3f} |" in table.splitlines()[-1]


def test_each_held_out_source_gets_its_own_checkpoints_members_included():
    script = _loso_script()
    params = {
        "checkpoint_dir": "runs/a.ckpt",
        "members": [
            {"backend": "encoder", "params": {"checkpoint_dir": "runs/m.ckpt", "lr": 1e-5}},
            "runs/x",
        ],
    }
    out = script.per_source_checkpoints(params, "toxichat")
    assert out["checkpoint_dir"] == "runs/a.ckpt-loso-toxichat"
    assert out["members"][0]["params"] == {"checkpoint_dir": "runs/m.ckpt-loso-toxichat", "lr": 1e-5}
    assert out["members"][1] == "runs/x" and params["members"][0]["params"]["checkpoint_dir"] == "runs/m.ckpt"
