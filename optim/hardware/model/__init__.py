"""The host latency model: roofline arithmetic, graph facts, ORT CPU layout, estimator, band."""
