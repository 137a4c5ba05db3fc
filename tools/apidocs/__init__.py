"""API reference rendering for tools/protoc_gen_apidocs.py (Markdown and HTML from proto comments)."""
