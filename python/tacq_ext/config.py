"""TACQConfig: what to quantize and how (docs/method.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

METHODS = ("tacq", "rtn", "gptq", "spqr_like", "squeezellm_like")
REFERENCES = ("gptq", "rtn")
BUDGETS = ("global", "layer", "row")


@dataclass
class TACQConfig:
    """bits: 2, 3 or 4. group_size: -1 (one scale per row) or a multiple of 32.
    ratio: fraction of all targeted weights kept in fp16, chosen globally.
    method: tacq | rtn | gptq | spqr_like | squeezellm_like (docs/method.md, Baselines).
    reference: the quantizer behind Q(W) in the TACQ score, "gptq" or "rtn".
    damp: GPTQ dampening as a fraction of the Hessian's mean diagonal.
    block_size: GPTQ lazy-update block width.
    act_order: GPTQ takes the columns in decreasing order of the Hessian's
    diagonal (group parameters then fixed up front); off in the paper's recipe.
    budget: "global" (the paper: top-k over all layers), or the kept weights
    split over layers ("layer") or rows ("row") by score mass.
    rescore (tacq only): the saliency is recomputed once, at a first masked
    quantization (docs/method.md, Recipes), and the kept set chosen again."""

    bits: int = 2
    group_size: int = -1
    ratio: float = 0.0035
    method: str = "tacq"
    reference: str = "gptq"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    budget: str = "global"
    rescore: bool = False
    wide_rows: float = 0.0

    def __post_init__(self):
        if self.bits not in (2, 3, 4):
            raise ValueError(f"TACQConfig.bits must be 2, 3 or 4, got {self.bits}")
        if self.group_size != -1 and (self.group_size <= 0 or self.group_size % 32):
            raise ValueError(f"TACQConfig.group_size must be -1 or a positive multiple of 32, got {self.group_size}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"TACQConfig.ratio must be in [0, 1), got {self.ratio}")
        if self.method not in METHODS:
            raise ValueError(f"TACQConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"TACQConfig.reference must be one of {REFERENCES}, got {self.reference!r}")
        if not 0.0 < self.damp < 1.0:
            raise ValueError(f"TACQConfig.damp must be in (0, 1), got {self.damp}")
        if not isinstance(self.act_order, bool):
            raise ValueError(f"TACQConfig.act_order must be True or False, got {self.act_order!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"TACQConfig.budget must be one of {BUDGETS}, got {self.budget!r}")
        if not isinstance(self.rescore, bool):
            raise ValueError(f"TACQConfig.rescore must be True or False, got {self.rescore!r}")
        if self.rescore and self.method != "tacq":
            raise ValueError(f"TACQConfig.rescore applies to method 'tacq' only, got method {self.method!r}")
        if not 0.0 <= self.wide_rows < 1.0:
            raise ValueError(f"TACQConfig.wide_rows must be in [0, 1), got {self.wide_rows}")
        if self.wide_rows and (self.method != "tacq" or self.bits not in (2, 3)):
            raise ValueError(f"TACQConfig.wide_rows applies to method 'tacq' at 2 or 3 bits, got method "
                             f"{self.method!r} at {self.bits} bits")
        if self.block_size <= 0:
            raise ValueError(f"TACQConfig.block_size must be positive, got {self.block_size}")

    @property
    def keeps_weights(self) -> bool:
        return self.method in ("tacq", "spqr_like", "squeezellm_like") and self.ratio > 0

    @property
    def uses_scores(self) -> bool:
        """Whether quantize_model needs per-weight scores: to keep weights or to choose wide rows."""
        return self.keeps_weights or self.wide_rows > 0

    def to_dict(self) -> dict:
        return asdict(self)
