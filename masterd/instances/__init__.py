"""Instances through the master: the configuration model, hooks and the node calls the opcodes share."""
