"""Ganeti-compatible node daemon.

One servicer, served over gRPC and over Ganeti's legacy JSON-over-HTTPS protocol.
"""
