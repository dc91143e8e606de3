"""Generator blocks, configs and checkpoint I/O."""
