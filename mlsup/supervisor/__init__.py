"""The supervisor daemon: configuration, CLI, worker lifecycle, restart policy, control plane."""
