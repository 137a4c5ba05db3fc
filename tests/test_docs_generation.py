"""docs/api generation: tools/gen_docs.py runs protoc with our protoc-gen-apidocs plugin."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

from generated.ganeti.common.v1 import legacy_pb2

REPO = Path(__file__).resolve().parent.parent
PROTO = REPO / "proto"
GEN_DOCS = REPO / "tools" / "gen_docs.py"


def gen_docs(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tools/gen_docs.py as `make docs` would, from a directory other than the repo."""
    return subprocess.run([sys.executable, str(GEN_DOCS), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())


def generated(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def descriptors(proto_dir: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """The descriptors of every .proto under proto_dir, compiled by protoc independently of the plugin."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
                        f"--descriptor_set_out={out}", *protos], check=True, timeout=120)
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(fds.file)


def section(text: str, anchor: str) -> str:
    """The Markdown from the explicit anchor `anchor` to the next explicit anchor."""
    start = text.index(f'<a id="{anchor}"></a>')
    end = text.find("<a id=", start + 1)
    return text[start:end if end >= 0 else len(text)]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    res = gen_docs(out)
    assert res.returncode == 0, res.stderr
    return out


def test_generates_index_and_one_markdown_and_html_page_per_package(docs: Path) -> None:
    packages = {fd.package for fd in descriptors(PROTO)}
    expected = {"index.md", "index.html"} | {f"{p}.{ext}" for p in packages for ext in ("md", "html")}
    assert set(generated(docs)) == expected


def test_generating_twice_gives_identical_output(docs: Path, tmp_path: Path) -> None:
    res = gen_docs(tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert generated(tmp_path / "again") == generated(docs)


def test_every_rpc_appears_in_the_markdown_with_its_legacy_name(docs: Path) -> None:
    rpcs = 0
    for fd in descriptors(PROTO):
        page = (docs / f"{fd.package}.md").read_text()
        for service in fd.service:
            for method in service.method:
                full = f"{fd.package}.{service.name}.{method.name}"
                text = section(page, full)
                assert f"#### {method.name}\n" in text
                if method.options.HasExtension(legacy_pb2.legacy):
                    legacy = method.options.Extensions[legacy_pb2.legacy].name
                    assert f"- Legacy procedure: `{legacy}`" in text, full
                    assert f"| `{legacy}` | [`{full}`]" in (docs / "index.md").read_text()
                rpcs += 1
    assert rpcs > 0


def test_message_fields_link_their_types_and_show_the_legacy_shape(docs: Path) -> None:
    page = (docs / "ganeti.node.v1.md").read_text()
    disk = section(page, "ganeti.node.v1.Disk")
    assert "| `children` | 3 | [`Disk`](#ganeti.node.v1.Disk) | repeated |" in disk
    assert "rest (collects other keys)" in disk
    compressed = section(page, "ganeti.node.v1.CompressedData")
    assert "Legacy shape: `TUPLE`" in compressed


def test_check_mode_accepts_fresh_docs_and_rejects_stale_ones(docs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "api"
    shutil.copytree(docs, copy)
    assert gen_docs(copy, "--check").returncode == 0
    (copy / "index.md").write_text("stale\n")
    res = gen_docs(copy, "--check")
    assert res.returncode == 1
    assert "index.md" in res.stderr


ESCAPE_PROTO = """\
// File comment with <tags> & "quotes".
syntax = "proto3";

package escape.v1;

import "ganeti/common/v1/legacy.proto";

// Service <script>alert("service")</script> & more.
service EscapeService {
  // Rpc comment: returns <b>bold</b> & 'quoted' text; code `a<b && c>d`.
  rpc Ping(PingRequest) returns (PingResponse) {
    option (ganeti.common.v1.legacy) = { name: "ping<&>" };
  }
}

// Message <i>request</i>.
message PingRequest {
  // Field <em>comment</em> & "value".
  string value = 1 [(ganeti.common.v1.legacy_name) = "v<1>"];
}

// Empty.
message PingResponse {}
"""


def test_html_special_characters_in_comments_are_escaped(tmp_path: Path) -> None:
    proto = tmp_path / "proto"
    (proto / "escape" / "v1").mkdir(parents=True)
    (proto / "ganeti" / "common" / "v1").mkdir(parents=True)
    shutil.copy(PROTO / "ganeti" / "common" / "v1" / "legacy.proto", proto / "ganeti" / "common" / "v1")
    (proto / "escape" / "v1" / "escape.proto").write_text(ESCAPE_PROTO)
    out = tmp_path / "out"
    res = gen_docs(out, "--proto-dir", str(proto))
    assert res.returncode == 0, res.stderr

    html = (out / "escape.v1.html").read_text()
    for raw in ("<script>", "<b>bold", "<i>request", "<em>comment", "<tags>", "ping<&>", "v<1>"):
        assert raw not in html
    assert "&lt;script&gt;alert(&quot;service&quot;)&lt;/script&gt; &amp; more" in html
    assert "returns &lt;b&gt;bold&lt;/b&gt; &amp; &#x27;quoted&#x27; text" in html
    assert "<code>a&lt;b &amp;&amp; c&gt;d</code>" in html
    assert "<code>ping&lt;&amp;&gt;</code>" in html
    assert "<code>v&lt;1&gt;</code>" in html
    assert "ping&lt;&amp;&gt;" in (out / "index.html").read_text()

    md = (out / "escape.v1.md").read_text()
    assert "<script>" not in md and "<b>bold" not in md
    assert "returns &lt;b&gt;bold&lt;/b&gt; &amp; 'quoted' text; code `a<b && c>d`" in md
