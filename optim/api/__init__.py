"""The only door for pages (``from optim import api``; ``api.X``): small, typed functions over the engine.

One module per capability, each with its ``__all__``; this package re-exports them all:
``models`` (samples, uploads, data, summary, baseline), ``sweeps`` (knobs, devices, starting a sweep),
``results`` (stored variants, artifacts, CSV), ``layers`` (one variant layer by layer), ``sensitivity_jobs``
(measured per-layer sensitivity jobs), ``learn`` (the Learn page's illustrations), ``report`` (offline HTML).
The decisions (baseline, recommendation, constraints) are :mod:`optim.analysis.select`'s, the figures
:mod:`optim.present.charts`'; both are re-exported here unchanged.
"""

from optim.analysis.labels import bits_label, kind_label
from optim.analysis.select import RECOMMENDATION, apply_constraints, baseline_row, recommend
from optim.api.layers import graph_changes, layer_view, roofline, runtime_fusion, sensitivity
from optim.api.learn import (
    fusion_of,
    prune_demo,
    quant_demo,
    roofline_of,
    sensitivity_table,
    soft_labels,
    weight_layers,
)
from optim.api.models import (
    DEMO_SAMPLE,
    Loaded,
    attach_data,
    baseline,
    list_samples,
    load_sample,
    load_upload,
    parse_shapes,
    summarize,
    synthetic_dataset,
)
from optim.api.report import report_html
from optim.api.results import (
    artifact_bytes,
    cpu_has_vnni,
    estimate_layers,
    results_csv,
    sweep_exists,
    sweep_info,
    sweep_version,
    variant_layers,
    variants,
)
from optim.api.sensitivity_jobs import (
    SENSITIVITY_BITS,
    SENSITIVITY_N,
    SENSITIVITY_PRUNE,
    sensitivity_data,
    sensitivity_estimate_s,
    start_sensitivity,
    stored_sensitivity,
)
from optim.api.sweeps import (
    MEASURED_DEVICE,
    SweepRequest,
    demo_request,
    distill_supported,
    list_devices,
    pass_available,
    pass_choices,
    run_on_choices,
    start_sweep,
    sweep_config,
)
from optim.errors import ConfigError, OptimError
from optim.handle import ModelHandle
from optim.present.charts import (
    BIT_COLORS,
    KIND_SYMBOLS,
    layer_bars,
    op_histogram_chart,
    pareto_2d,
    pareto_3d,
    quant_error_chart,
    roofline_chart,
    sensitivity_heatmap,
)
from optim.present.sensitivity import sensitivity_chart, sensitivity_view
from optim.present.views import (
    METRIC_LABELS,
    add_flags,
    flags_on_target,
    fmt_ms,
    graph_diff,
    int8_note,
    ms_decimals,
    summary_facts,
)
from optim.sweep.jobs import SweepJob, get_job, job_for_sweep, start_job
from optim.sweep.node import hardware_note

__all__ = [
    "BIT_COLORS",
    "ConfigError",
    "DEMO_SAMPLE",
    "KIND_SYMBOLS",
    "Loaded",
    "MEASURED_DEVICE",
    "METRIC_LABELS",
    "ModelHandle",
    "OptimError",
    "RECOMMENDATION",
    "SENSITIVITY_BITS",
    "SENSITIVITY_N",
    "SENSITIVITY_PRUNE",
    "SweepJob",
    "SweepRequest",
    "add_flags",
    "apply_constraints",
    "artifact_bytes",
    "attach_data",
    "baseline",
    "baseline_row",
    "bits_label",
    "cpu_has_vnni",
    "demo_request",
    "distill_supported",
    "estimate_layers",
    "flags_on_target",
    "fmt_ms",
    "fusion_of",
    "get_job",
    "graph_changes",
    "graph_diff",
    "hardware_note",
    "int8_note",
    "job_for_sweep",
    "kind_label",
    "layer_bars",
    "layer_view",
    "list_devices",
    "list_samples",
    "load_sample",
    "load_upload",
    "ms_decimals",
    "op_histogram_chart",
    "pareto_2d",
    "pareto_3d",
    "parse_shapes",
    "pass_available",
    "pass_choices",
    "prune_demo",
    "quant_demo",
    "quant_error_chart",
    "recommend",
    "report_html",
    "results_csv",
    "roofline",
    "roofline_chart",
    "roofline_of",
    "run_on_choices",
    "runtime_fusion",
    "sensitivity",
    "sensitivity_chart",
    "sensitivity_data",
    "sensitivity_estimate_s",
    "sensitivity_heatmap",
    "sensitivity_table",
    "sensitivity_view",
    "soft_labels",
    "start_job",
    "start_sensitivity",
    "start_sweep",
    "stored_sensitivity",
    "summarize",
    "summary_facts",
    "sweep_config",
    "sweep_exists",
    "sweep_info",
    "sweep_version",
    "synthetic_dataset",
    "variant_layers",
    "variants",
    "weight_layers",
]
