"""Compression passes, one technique per module, registered by name (see ``base.py``)."""

from optim.passes.base import PassContext, PassSpec, get_pass, list_passes, register

__all__ = ["PassContext", "PassSpec", "get_pass", "list_passes", "register"]
