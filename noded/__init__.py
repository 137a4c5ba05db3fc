"""Ganeti-compatible node daemon: one servicer, served over gRPC and over Ganeti's legacy JSON-over-HTTPS protocol."""
