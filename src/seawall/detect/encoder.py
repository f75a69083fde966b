"""`encoder`: fine-tune a Hugging Face encoder with a 2-way classification head on (prompt, response).

Input layout: [CLS] prompt-part [SEP] response-part [SEP] (token type 0 / 1 where the model has token types).
Truncation, within `max_length` tokens:
- the prompt keeps at most `prompt_tokens` tokens: its first quarter and its last three quarters, because the
  request itself sits at the end of long jailbreak-style prompts and the task framing at the start;
- the response gets the rest of the budget, split `response_head` (default 0.75) from its beginning and the remainder
  from its end: compliance or refusal shows in the first sentences, and a late "…but I cannot" or a harmful payload
  after a disclaimer shows at the end;
- texts longer than ~9,000 characters are first cut to their first 6,000 and last 3,000 characters, so a 100,000-
  character response costs no more than a long one.
The fast path scores in length-sorted batches with dynamic padding under `torch.inference_mode`. `precision`
(`auto | float32 | bfloat16`, `seawall.models.precision`) picks its number format: with bf16 (auto's choice on CPUs
with AMX or AVX512-BF16) training runs under bf16 autocast with fp32 master weights, and scoring uses a bf16 copy of
the weights, which measured faster than autocast here at batch 32 and at batch 1 (autocast pays a cast per op) and
~3× faster than fp32, at the same decisions (`seawall detect bench` reports the agreement). `quantize=True` instead
applies dynamic int8 quantization to the linear layers. `runtime="onnx"` exports the fine-tuned model once per
process to ONNX (in memory) and scores it with ONNX Runtime in fp32 (all graph optimizations: attention, GELU and
LayerNorm fusion); with `quantize=True` there, only the feed-forward MatMuls become int8 (per-channel weights), the
attention projections stay fp32, which keeps the decisions at the stored threshold close to fp32. `precision` only
applies to the torch runtime without `quantize`. `freeze_layers=k` trains only the blocks above the k-th (and the
head), which makes a CPU training step markedly cheaper.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect._torch import (
    clip_chars,
    head_tail,
    resolve_model_path,
    seed_everything,
    setup_torch,
    thread_count,
)
from seawall.detect.base import DETECTORS, Detector, Pair
from seawall.detect.training import (
    PROGRESS_MIN_ROWS,
    Encoded,
    TrainSettings,
    encode_dev,
    predict_logits,
    train,
)
from seawall.errors import ModelError
from seawall.models.load import quiet_transformers
from seawall.models.precision import resolve_precision, torch_dtype

MODEL_DIR = "model"


@DETECTORS.register("encoder")
class EncoderDetector(Detector):
    """A fine-tuned sequence classifier (default base: all-MiniLM-L6-v2)."""

    backend = "encoder"

    def __init__(
        self,
        base_model: str = "all-minilm-l6-v2",
        max_length: int = 256,
        prompt_tokens: int = 64,
        response_head: float = 0.75,
        lr: float = 5e-5,
        epochs: float = 2.0,
        batch_size: int = 16,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        freeze_layers: int = 0,
        class_weight: str | None = "balanced",
        patience: int = 2,
        eval_every: int = 0,
        max_steps: int | None = None,
        seed: int = 0,
        checkpoint_dir: str | None = None,
        num_threads: int | None = 2,
        inference_batch_size: int = 32,
        quantize: bool = False,
        runtime: str = "torch",
        precision: str = "auto",
        calibration: str = "temperature",
        threshold_strategy: str = "f1",
        target_recall: float = 0.95,
        category_model: bool = True,
    ) -> None:
        self.base_model = base_model
        self.max_length = max_length
        self.prompt_tokens = prompt_tokens
        self.response_head = response_head
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.freeze_layers = freeze_layers
        self.class_weight = class_weight
        self.patience = patience
        self.eval_every = eval_every
        self.max_steps = max_steps
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.num_threads = num_threads
        self.inference_batch_size = inference_batch_size
        self.quantize = quantize
        self.runtime = runtime
        self.precision = precision
        self.calibration = calibration
        self.threshold_strategy = threshold_strategy
        self.target_recall = target_recall
        self.category_model = category_model

    def set_params(self, **params: Any) -> EncoderDetector:
        """sklearn's set_params; changing `quantize`, `runtime` or `precision` drops the cached fast model."""
        if {"quantize", "runtime", "precision"} & params.keys():
            self._fast_model = None
        return super().set_params(**params)

    # ---- model loading ---------------------------------------------------------------------------------------------
    def _load_model(self, path: Path, fresh_head: bool) -> None:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot read the model config in {path}: {error}") from None
        if getattr(config, "is_decoder", False) or config.model_type in _CAUSAL_ONLY:
            raise ModelError(
                f"{path} holds a {config.model_type!r} causal LM, not an encoder; use the lm-judge backend for it"
            )
        kwargs: dict[str, Any] = {}
        if fresh_head:
            kwargs = {
                "num_labels": 2,
                "id2label": {0: "safe", 1: "unsafe"},
                "label2id": {"safe": 0, "unsafe": 1},
            }
        try:
            self.tokenizer_ = AutoTokenizer.from_pretrained(path)
            with quiet_transformers():  # the load report lists the fresh head as "missing" keys
                self.model_ = AutoModelForSequenceClassification.from_pretrained(
                    path, use_safetensors=True, trust_remote_code=False, **kwargs
                )
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"cannot load an encoder classifier from {path}: {error}") from None
        if self.model_.config.num_labels != 2:
            raise ModelError(f"{path} has a {self.model_.config.num_labels}-label head; a detector needs 2")
        self.model_.eval()
        tok = self.tokenizer_
        self._cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self._sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else (self._sep or 0)
        self._use_types = getattr(self.model_.config, "type_vocab_size", 1) > 1
        self._fast_model = None

    # ---- encoding --------------------------------------------------------------------------------------------------
    def encode(self, pairs: list[Pair]) -> Encoded:
        """Token ids with the truncation strategy in the module docstring."""
        # verbose=False: the texts are tokenised whole and cut below, so the tokenizer's "longer than the maximum
        # sequence length" warning does not apply.
        tok = self.tokenizer_
        prompts = tok([clip_chars(p) for p, _ in pairs], add_special_tokens=False, verbose=False)["input_ids"]
        responses = tok([clip_chars(r) for _, r in pairs], add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
        specials = [t for t in (self._cls, self._sep, self._sep) if t is not None]
        budget = self.max_length - len(specials)
        ids, types = [], []
        for p, r in zip(prompts, responses, strict=True):
            p = head_tail(p, min(self.prompt_tokens, budget), 0.25)
            r = head_tail(r, budget - len(p), self.response_head)
            first = (
                ([self._cls] if self._cls is not None else [])
                + p
                + ([self._sep] if self._sep is not None else [])
            )
            second = r + ([self._sep] if self._sep is not None else [])
            ids.append(first + second)
            types.append([0] * len(first) + [1] * len(second))
        return Encoded(ids, types if self._use_types else None)

    def _forward(self, model: Any) -> Any:
        def forward(batch: dict[str, Any]) -> Any:
            return model(**batch).logits

        return forward

    # ---- fit / score -----------------------------------------------------------------------------------------------
    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: tuple[list[Pair], np.ndarray] | None) -> None:
        setup_torch(self.num_threads)
        seed_everything(self.seed)
        path = resolve_model_path(self.base_model)
        self._load_model(path, fresh_head=True)
        self.base_fingerprint_ = _fingerprint(path)
        if self.freeze_layers:
            _freeze_lower(self.model_, self.freeze_layers)
        settings = TrainSettings.from_detector(self)
        dev_enc = encode_dev(self.encode, dev)
        self.history_ = train(
            self.model_,
            self._forward(self.model_),
            self.encode(pairs),
            y,
            dev_enc,
            self._pad,
            settings,
            "encoder",
        )
        self.training_["history"] = {k: v for k, v in self.history_.items() if k != "loss"}
        self.training_["precision"] = settings.precision
        self._fast_model = None  # a bf16 copy made before training would hold the old weights

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        import torch

        setup_torch(self.num_threads)
        logits = predict_logits(
            self._inference_forward(),
            self.encode(pairs),
            self._pad,
            self.inference_batch_size,
            desc="encoder: scoring" if len(pairs) >= PROGRESS_MIN_ROWS else None,
            split_gaps=self.runtime == "onnx",
        )
        return torch.softmax(torch.tensor(logits), dim=1)[:, 1].numpy().astype(np.float64)

    def _inference_forward(self) -> Any:
        if self.runtime == "onnx":
            if self._fast_model is None:
                self._fast_model = _onnx_session(self, int8=self.quantize)
            return _onnx_forward(self._fast_model)
        if self.runtime != "torch":
            raise ModelError(f"unknown encoder runtime {self.runtime!r}; use 'torch' or 'onnx'")
        return self._forward(self._inference_model())

    def scoring_path(self) -> str:
        """How `_score` runs on this machine: runtime and number format, e.g. "torch-bfloat16" or "onnx-int8"."""
        if self.quantize:
            return f"{self.runtime}-int8"
        if self.runtime == "onnx":
            return "onnx-float32"
        return f"{self.runtime}-{resolve_precision(self.precision, 'encoder.precision')}"

    def _inference_model(self) -> Any:
        path = self.scoring_path()
        if path == "torch-float32":
            return self.model_
        if self._fast_model is None:
            import torch

            if path == "torch-int8":
                with quiet_transformers():  # torch warns that its quantized tensor types are deprecated
                    self._fast_model = torch.ao.quantization.quantize_dynamic(
                        copy.deepcopy(self.model_), {torch.nn.Linear}, dtype=torch.qint8
                    )
            else:
                self._fast_model = copy.deepcopy(self.model_).to(torch_dtype("bfloat16")).eval()
        return self._fast_model

    # ---- persistence -----------------------------------------------------------------------------------------------
    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with quiet_transformers():
            self.model_.save_pretrained(folder / MODEL_DIR, safe_serialization=True)
        self.tokenizer_.save_pretrained(folder / MODEL_DIR)
        state = {
            "model_dir": MODEL_DIR,
            "model_type": self.model_.config.model_type,
            "base_fingerprint": getattr(self, "base_fingerprint_", None),
        }
        return state, {}

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        path = folder / state.get("model_dir", MODEL_DIR)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelError(f"{folder} lacks {MODEL_DIR}/config.json; the detector folder is incomplete")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if state.get("model_type") and model_type != state["model_type"]:
            raise ModelError(
                f"{path} holds a {model_type!r} model but this detector was saved with {state['model_type']!r}"
            )
        setup_torch(self.num_threads)
        self._load_model(path, fresh_head=False)
        self.base_fingerprint_ = state.get("base_fingerprint")


# ONNX node names of feed-forward matmuls across BERT-family exports (intermediate/output dense, DistilBERT ffn,
# MLP blocks); attention projections are left in fp32.
_FFN_NODE = re.compile(r"/(intermediate|ffn|mlp)/|/output/dense/")


def _onnx_session(detector: EncoderDetector, int8: bool) -> Any:
    """An ONNX Runtime session for the detector's model (exported in memory; FFN-only int8 when asked)."""
    import io
    import logging
    import tempfile

    import onnxruntime as ort
    import torch

    try:
        import onnx
    except ImportError:
        raise ModelError("runtime='onnx' needs the onnx package: pip install 'seawall[fast]'") from None

    sample = detector.encode([("how do I", "an answer")]).batch(np.arange(1), detector._pad)
    names = list(sample)

    class _Logits(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors, strict=True))).logits

    buffer = io.BytesIO()
    # The tracer warns about Python conditions on tensor shapes and negative indices; the tests and the bench check
    # the exported model against PyTorch (max |Δp| ~1e-7 on MiniLM), so the warnings go to the debug log.
    with torch.no_grad(), quiet_transformers():
        torch.onnx.export(
            _Logits(detector.model_).eval(),
            tuple(sample[k] for k in names),
            buffer,
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in names}, "logits": {0: "batch"}},
            opset_version=17,
        )
    model_bytes = buffer.getvalue()
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        graph = onnx.load_from_string(model_bytes)
        ffn = [
            n.name
            for n in graph.graph.node
            if n.op_type == "MatMul" and _FFN_NODE.search(n.name) and "attention" not in n.name
        ]
        if not ffn:
            raise ModelError(f"cannot locate the feed-forward MatMuls of {detector.base_model} for int8")
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(model_bytes)
            # The quantizer logs a generic "consider pre-processing" hint on the root logger for every model.
            logging.disable(logging.WARNING)
            try:
                quantize_dynamic(
                    src,
                    dst,
                    op_types_to_quantize=["MatMul"],
                    nodes_to_quantize=ffn,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                )
            finally:
                logging.disable(logging.NOTSET)
            model_bytes = dst.read_bytes()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = thread_count(detector.num_threads) or 2
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _onnx_forward(session: Any) -> Any:
    import torch

    def forward(batch: dict[str, Any]) -> Any:
        return torch.from_numpy(session.run(None, {k: v.numpy() for k, v in batch.items()})[0])

    return forward


_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def _freeze_lower(model: Any, n_layers: int) -> None:
    """Freeze the embeddings and the first `n_layers` blocks: backward stops early, a step costs much less on CPU."""
    for name, param in model.named_parameters():
        match = _LAYER_INDEX.search(name)
        if "embeddings" in name or (match and int(match.group(1)) < n_layers):
            param.requires_grad_(False)


_CAUSAL_ONLY = {
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "gpt2",
    "phi3",
    "smollm3",
}


def _fingerprint(path: Path) -> dict[str, Any]:
    """Model type, size and weight-file size of the base model (logged with the detector)."""
    config = json.loads((path / "config.json").read_text())
    weights = sorted(path.glob("*.safetensors"))
    return {
        "path": str(path),
        "model_type": config.get("model_type"),
        "hidden_size": config.get("hidden_size"),
        "num_hidden_layers": config.get("num_hidden_layers"),
        "weights_bytes": sum(w.stat().st_size for w in weights),
    }
