"""_quant layer."""
