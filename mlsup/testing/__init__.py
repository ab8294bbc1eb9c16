"""Helpers for testing code that uses mlsup on machines without a GPU.

Shipped with the package so that users can test their own features the way mlsup tests itself:
a real Redis (or an embedded one), simulated GPUs, and tiny real models.
"""
