"""Inter-process communication: wire format, ZeroMQ request bridge, shared-memory tensors.

Depends on neither ``mlsup.kit`` nor ``mlsup.supervisor``.
"""
