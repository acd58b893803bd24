"""Target hardware model: sourced device catalog, per-layer roofline estimator, per-CPU host calibration.

Layout: ``host`` (the one CPU probe), ``device`` (data types), ``catalog`` (``devices.toml``),
``profiles`` (per-CPU host profiles in the data dir), ``model/`` (roofline, graph info, ORT CPU layout,
estimator, uncertainty band, host device), ``calibration/`` (micro-benchmarks, kernel profiles, fit,
background job, validation, reference models) and ``targets`` (the front door: devices by id,
``estimate``, ``roofline_points``, ``host_calibration_status``, ``start_host_calibration``).
This file imports nothing, so ``optim.hardware.host`` stays cheap to import from anywhere.
"""
