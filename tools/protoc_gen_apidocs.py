#!/usr/bin/env python3
"""protoc plugin: Markdown and HTML API reference from the proto comments.

Reads a CodeGeneratorRequest on stdin and writes a CodeGeneratorResponse on
stdout with, for every proto package among the files to generate,
`<package>.md` and `<package>.html`, plus `index.md` and `index.html`.
The legacy options (`(ganeti.common.v1.legacy)` on rpcs, `legacy_shape` on
messages, `legacy_name`/`legacy_rest` on fields) are read through the
generated extensions in generated/ganeti/common/v1/legacy_pb2.py.
The output is deterministic: same descriptors, same bytes.

Run through tools/gen_docs.py, which gives protoc a wrapper executable.
"""

from __future__ import annotations

import sys
from pathlib import Path

# protoc runs this file as a script: make the repository root importable (tools.*, generated.*).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from google.protobuf.compiler import plugin_pb2  # noqa: E402

# Imported before the request is parsed, so the legacy extensions are registered and parsed.
from tools.apidocs import model  # noqa: E402
from tools.apidocs.render_html import HtmlPages  # noqa: E402
from tools.apidocs.render_md import MarkdownPages  # noqa: E402


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    try:
        packages = model.build(list(request.proto_file), list(request.file_to_generate))
    except ValueError as e:
        response.error = f"protoc-gen-apidocs: {e}"
        return response
    md, html = MarkdownPages(packages), HtmlPages(packages)
    files = {"index.md": md.index_page(), "index.html": html.index_page()}
    for pkg in packages:
        files[f"{pkg.name}.md"] = md.package_page(pkg)
        files[f"{pkg.name}.html"] = html.package_page(pkg)
    for name in sorted(files):
        out = response.file.add()
        out.name = name
        out.content = files[name]
    return response


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = generate(request)
    sys.stdout.buffer.write(response.SerializeToString(deterministic=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
