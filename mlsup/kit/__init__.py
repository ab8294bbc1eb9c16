"""The construction kit: VRAM leases, device inventory, loaders, managed loaders, idle unloading.

Usable directly inside any process; the supervisor runs the same kit out of process.
"""
