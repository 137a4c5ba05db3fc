"""The import/export transfer daemon: one detached process per disk transfer between nodes.

`python -m noded.impexp.daemon <status file> {import|export} ...` streams one
disk (or file, or OS script output) over TLS: an import listens on the node's
address and writes what it receives, an export connects and sends. Its state
lives in the status directory `$RUN_DIR/import-export/<name>/` (files
`status`, `pid`, `ca`), as with Ganeti's import-export daemon; the procedures
that start and watch it are in noded.backends.impexp.
"""
