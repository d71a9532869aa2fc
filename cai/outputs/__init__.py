"""What stages write and later readers (the report, the cards, ``cai models``) read, as types.

A stage writes its summary through `cai.io.outputs.write_output`, which refuses figures that would
not read back as the stage's type; a reader gets them back typed through `cai.io.outputs` (the
report through its `RunView`), so no reader re-parses an untyped dictionary with ``.get`` chains
and legacy fallbacks.

Each model declares the fields some reader uses and keeps everything else the stage recorded
(``extra="allow"``): a summary round-trips byte for byte, and a figure added to a stage needs no
change here until something reads it. Every declared field is optional, because run folders
written by older versions lack newer figures and readers say "—" for them. Numbers are
``int | float`` so a count stays an int and a rate a float when written back.
"""

from __future__ import annotations

from cai.outputs.base import (
    Difference,
    JudgeSettings,
    Num,
    Output,
    OutT,
    Provenance,
    Rate,
    Throughput,
    parse_output,
)
from cai.outputs.evaluation import (
    DetectorFigures,
    EvalSample,
    EvalSettings,
    EvalSummary,
    Harmless,
    HarmlessMeasure,
    ParetoCell,
    PlainStyle,
    PmReward,
    RefusalRates,
    Step,
    StyleFigures,
    WinRate,
)
from cai.outputs.records import (
    CritiqueRecord,
    CritiqueRound,
    CritiqueSummary,
    LabelCounts,
    LabelRecord,
    LabelSummary,
    OrderAnswer,
    PrincipleAnswer,
    PrincipleFigures,
    RunManifest,
)
from cai.outputs.training import (
    DataSource,
    MonitorCheck,
    MonitorRefusals,
    MonitorSummary,
    MonitorWarning,
    RowCounts,
    TrainLogRow,
    TrainRecord,
    TrainSettings,
    TrainSummary,
)

__all__ = [
    "CritiqueRecord",
    "CritiqueRound",
    "CritiqueSummary",
    "DataSource",
    "DetectorFigures",
    "Difference",
    "EvalSample",
    "EvalSettings",
    "EvalSummary",
    "Harmless",
    "HarmlessMeasure",
    "JudgeSettings",
    "LabelCounts",
    "LabelRecord",
    "LabelSummary",
    "MonitorCheck",
    "MonitorRefusals",
    "MonitorSummary",
    "MonitorWarning",
    "Num",
    "OrderAnswer",
    "OutT",
    "Output",
    "ParetoCell",
    "PlainStyle",
    "PmReward",
    "PrincipleAnswer",
    "PrincipleFigures",
    "Provenance",
    "Rate",
    "RefusalRates",
    "RowCounts",
    "RunManifest",
    "Step",
    "StyleFigures",
    "Throughput",
    "TrainLogRow",
    "TrainRecord",
    "TrainSettings",
    "TrainSummary",
    "WinRate",
    "parse_output",
]
