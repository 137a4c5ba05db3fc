"""Legacy JSON-over-HTTPS door of the node daemon, driven by the proto descriptors."""
