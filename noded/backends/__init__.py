"""Backends: plain functions implementing the legacy procedures, no transport in them."""
