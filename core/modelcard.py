"""The model card: everything inference needs besides the weights.

It is stored as a plain dict inside ``model.pt`` and as string key/value pairs
in the ONNX file's ``metadata_props`` (all keys prefixed ``unsupseg.``), so an
.onnx file is self-contained: ``seginfer`` reads normalisation, threshold, size
multiple and polarity rule from it and needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from unsupseg.core.errors import ModelFileError
from unsupseg.core.normalize import Normalization

PREFIX = "unsupseg."
INPUT_NAME = "image"  # (batch, 1, height, width) float32, normalised to [0, 1]
OUTPUT_NAME = "prob"  # (batch, 1, height, width) float32 in [0, 1]
POLARITY_RULES = ("auto", "border", "minority", "bright", "dark", "model")  # core/polarity.py
# what turns the network's two-region split into the mask (core/structure/): "auto" decides per
# folder from a sample of it; files written before the field existed read as "none"
STRUCTURE_RULES = ("auto", "none", "objects", "membranes", "photo")


@dataclass
class ModelCard:
    arch: str  # network family, e.g. "seed" or "unet"
    width: int  # channels of the first encoder block
    package_version: str = ""  # unsupseg version that wrote the file
    normalization: Normalization = field(default_factory=Normalization)
    threshold: float = 0.5  # probability above which a pixel is region 1
    size_multiple: int = 8  # height and width must be multiples of this
    polarity: str = "auto"  # which region is foreground (core/polarity.py)
    train_iou: float | None = None  # final polarity-free IoU on the training split, percent
    test_iou: float | None = None  # final polarity-free IoU on the test split, percent
    checkpoint_sha256: str = ""  # sha256 of the source model.pt (set by the exporter)
    quantization: str = "none"  # "none" or "int8-qdq"
    structure: str = "none"  # the structure step after the foreground rule (core/structure/)
    structure_context: dict = field(default_factory=dict)  # its folder-level measurements (adaptation)

    def __post_init__(self) -> None:
        if self.polarity not in POLARITY_RULES:
            raise ValueError(f"polarity must be one of {POLARITY_RULES}, got {self.polarity!r}")
        if self.structure not in STRUCTURE_RULES:
            raise ValueError(f"structure must be one of {STRUCTURE_RULES}, got {self.structure!r}")

    # -- plain dict (checkpoint) ---------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["normalization"] = asdict(self.normalization)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "normalization" in kw and isinstance(kw["normalization"], dict):
            kw["normalization"] = Normalization(**kw["normalization"])
        return cls(**kw)

    # -- ONNX metadata_props ------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        out = {}
        for k, v in self.to_dict().items():
            out[PREFIX + k] = json.dumps(v)
        out[PREFIX + "input_name"] = json.dumps(INPUT_NAME)
        out[PREFIX + "output_name"] = json.dumps(OUTPUT_NAME)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> ModelCard:
        d = {}
        for k, v in meta.items():
            if k.startswith(PREFIX):
                try:
                    d[k[len(PREFIX) :]] = json.loads(v)
                except json.JSONDecodeError as e:
                    raise ModelFileError(f"{source}: metadata {k!r} is not valid JSON ({e})") from e
        missing = [k for k in ("arch", "width", "normalization") if k not in d]
        if missing:
            raise ModelFileError(
                f"{source}: not an unsupseg ONNX file (metadata {', '.join(missing)} missing); "
                "export one with `segexport MODEL.pt MODEL.onnx`"
            )
        return cls.from_dict(d)
