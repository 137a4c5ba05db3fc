"""The master's gRPC door (ganeti.master.v1 over mutual TLS on TCP 1813), beside its LUXI door.

Our ganeti-masterd runs detached in a temporary GANETI_ROOTDIR with the
ssconf files of a one-node cluster (its primary IP a 127.x.y.z address of
its own), the cluster certificate server.pem and one master candidate's
client certificate; clients use the generated stubs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from compat_jsonrpc import codec
from generated.ganeti.master.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    objects_pb2,
    query_pb2,
    query_pb2_grpc,
)
from noded import certs
from noded.paths import Paths
from noded.tls import split_pem
from tools.gnt.luxi_client import LuxiClient

MASTERD = str(Path(sys.executable).parent / "ganeti-masterd")
HOST = "node1"
SERVICES = ("ganeti.master.v1.JobService", "ganeti.master.v1.QueryService", "ganeti.master.v1.ClusterService")

pytestmark = pytest.mark.skipif(not os.path.exists(MASTERD), reason="needs our ganeti-masterd console script")


@dataclass
class Master:
    root: Path
    address: str
    client_pem: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, GANETI_ROOTDIR=str(self.root), GANETI_HOSTNAME=HOST)
        env.pop("PYTHONPATH", None)
        return env

    @property
    def data(self) -> Path:
        return self.root / "var/lib/ganeti"

    @property
    def server_pem(self) -> Path:
        return self.data / "server.pem"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MASTERD, *args], env=self.env, capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        try:
            pid = int((self.root / "var/run/ganeti/ganeti-masterd.pid").read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    def channel(self, cert: Path | None = None, port: int = 1813) -> grpc.Channel:
        """A TLS channel presenting `cert` (key + certificate file), or no certificate when None."""
        _, ca = split_pem(self.server_pem.read_bytes())
        if cert is None:
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
        else:
            key, chain = split_pem(cert.read_bytes())
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                 certificate_chain=chain)
        return grpc.secure_channel(f"{self.address}:{port}", creds,
                                   options=[("grpc.ssl_target_name_override", certs.CLUSTER_CERT_CN)])

    def luxi(self) -> LuxiClient:
        return LuxiClient(paths=Paths(root=str(self.root), hostname=HOST))


def make_master(base: Path) -> Master:
    root = base / HOST
    data = root / "var/lib/ganeti"
    data.mkdir(parents=True)
    address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    for key, value in {"master_node": HOST, "cluster_name": "cluster.example.com", "node_list": HOST,
                       "node_primary_ips": f"{HOST} {address}", "master_netdev": "lo",
                       "primary_ip_family": "2", "release_version": "3.0.2"}.items():
        (data / f"ssconf_{key}").write_text(value + "\n")
    certs.write_server_pem(str(data / "server.pem"))
    client_pem = data / "client.pem"
    fingerprint = certs.write_client_pem(str(client_pem), str(data / "server.pem"), "node1-uuid")
    (data / "ssconf_master_candidates_certs").write_text(f"node1-uuid={fingerprint}\n")
    return Master(root, address, client_pem)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    m = make_master(tmp_path_factory.mktemp("grpcmaster"))
    done = m.run()
    assert done.returncode == 0, done.stderr
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def channel(master: Master) -> Iterator[grpc.Channel]:
    with master.channel(master.client_pem) as ch:
        yield ch


def delay_op(duration: float, repeat: int = 0) -> objects_pb2.OpCode:
    op = objects_pb2.OpCode(op_id="OP_TEST_DELAY")
    op.params.update({"duration": duration, "on_master": True, "on_nodes": [], "repeat": repeat,
                      "no_locks": False})
    return op


def submit(channel: grpc.Channel, duration: float, repeat: int = 0) -> int:
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    return int(stub.SubmitJob(jobs_pb2.SubmitJobRequest(ops=[delay_op(duration, repeat)]), timeout=10).job_id)


def watch(channel: grpc.Channel, job_id: int, **kw: Any) -> list[jobs_pb2.WatchJobResponse]:
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    return list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id, **kw), timeout=30))


def grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert isinstance(caught.value, grpc.RpcError)
    return caught.value


# -- jobs -----------------------------------------------------------------------------------------

def test_watch_job_streams_status_changes_and_log_entries_until_success(channel: grpc.Channel) -> None:
    job_id = submit(channel, 0.15, repeat=3)
    updates = watch(channel, job_id)
    statuses = [u.status for u in updates]
    assert statuses[-1] == "success" and "running" in statuses
    assert all(a != b or u.log_entries for a, b, u in zip(statuses, statuses[1:], updates[1:], strict=False))
    messages = [codec.value_to_native(e.message) for u in updates for e in u.log_entries]
    assert messages == [f" - INFO: Test delay iteration {i}/2" for i in range(3)]
    serials = [e.serial for u in updates for e in u.log_entries]
    assert serials == sorted(set(serials))
    assert [u.HasField("job") for u in updates] == [False] * (len(updates) - 1) + [True]
    last = updates[-1].job
    assert last.id == job_id and list(last.opstatus) == ["success"] and last.HasField("end_ts")


def test_watch_job_of_a_finished_job_is_one_message_and_resumes_after_a_serial(channel: grpc.Channel) -> None:
    job_id = submit(channel, 0.01, repeat=2)
    watch(channel, job_id)
    again = watch(channel, job_id, after_log_serial=1)
    assert len(again) == 1 and again[0].status == "success"
    assert [e.serial for e in again[0].log_entries] == [2]


def test_watch_job_of_an_unknown_job_is_not_found(channel: grpc.Channel) -> None:
    err = grpc_error(lambda: watch(channel, 999999))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "999999" in (err.details() or "")


def test_submit_many_jobs_gives_one_id_per_job(channel: grpc.Channel) -> None:
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    jobs = [jobs_pb2.JobDefinition(ops=[delay_op(0.01)]) for _ in range(3)]
    request = jobs_pb2.SubmitManyJobsRequest(jobs=jobs)
    results = stub.SubmitManyJobs(request, timeout=10).results
    assert [r.success for r in results] == [True] * 3
    ids = [int(r.result.number_value) for r in results]
    assert ids == list(range(ids[0], ids[0] + 3))
    assert all(watch(channel, i)[-1].status == "success" for i in ids)


def test_submit_job_with_an_unknown_opcode_is_invalid_argument(channel: grpc.Channel) -> None:
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    op = objects_pb2.OpCode(op_id="OP_NO_SUCH_THING")
    err = grpc_error(lambda: stub.SubmitJob(jobs_pb2.SubmitJobRequest(ops=[op]), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "OP_NO_SUCH_THING" in (err.details() or "")


def test_query_jobs_and_query_with_a_filter(channel: grpc.Channel) -> None:
    first, second = submit(channel, 0.01), submit(channel, 0.01)
    watch(channel, second)
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    rows = jobs.QueryJobs(jobs_pb2.QueryJobsRequest(job_ids=objects_pb2.JobIdList(ids=[second, first]),
                                                    fields=["id", "status", "summary"]), timeout=10).rows
    summary = ["TEST_DELAY(1.0e-2)"]  # Haskell's rendering of 0.01, as luxid prints it
    assert [codec.list_to_native(r) for r in rows] == [[second, "success", summary],
                                                      [first, "success", summary]]
    query = query_pb2_grpc.QueryServiceStub(channel)
    request = query_pb2.QueryRequest(what="job", fields=["id", "status"])
    codec.native_to_list(request.qfilter, ["|", ["=", "id", first], ["=", "id", second]], "qfilter")
    answer = query.Query(request, timeout=10)
    assert [(f.name, f.kind) for f in answer.fields] == [("id", "number"), ("status", "text")]
    assert [[(e.status, codec.value_to_native(e.value)) for e in row.entries] for row in answer.data] == [
        [(0, first), (0, "success")], [(0, second), (0, "success")]]


def test_query_with_a_bad_filter_is_invalid_argument(channel: grpc.Channel) -> None:
    query = query_pb2_grpc.QueryServiceStub(channel)
    request = query_pb2.QueryRequest(what="job", fields=["id"])
    codec.native_to_list(request.qfilter, ["no-such-operator", "id", 1], "qfilter")
    err = grpc_error(lambda: query.Query(request, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.trailing_metadata() or ())["ganeti-error"].startswith('["ParameterError"')


def test_cancel_job_dequeues_a_queued_job(channel: grpc.Channel) -> None:
    blocker = submit(channel, 1.0)  # node lock on the master: the next delay waits
    job_id = submit(channel, 0.01)
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    answer = stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=10)
    assert answer.success, answer.message
    assert watch(channel, job_id)[-1].status == "canceled"
    assert stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=999999), timeout=10).message == \
        "Job 999999 not found in queue"
    stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=blocker, kill=True), timeout=10)


def test_archive_job_moves_a_finished_job_to_the_archive(master: Master, channel: grpc.Channel) -> None:
    job_id = submit(channel, 0.01)
    watch(channel, job_id)
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    assert stub.ArchiveJob(jobs_pb2.ArchiveJobRequest(job_id=job_id), timeout=10).archived
    assert (master.data / "queue/archive" / str(job_id // 10000) / f"job-{job_id}").exists()
    assert not stub.ArchiveJob(jobs_pb2.ArchiveJobRequest(job_id=job_id), timeout=10).archived
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10).job
    assert job.archived and job.status == "success"
    updates = watch(channel, job_id)
    assert len(updates) == 1 and updates[0].status == "success" and updates[0].job.archived


def test_get_job_of_an_unknown_job_is_not_found(channel: grpc.Channel) -> None:
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    err = grpc_error(lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id=999999), timeout=10))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- cluster ---------------------------------------------------------------------------------------

def test_set_drain_flag_refuses_new_jobs_until_cleared(master: Master, channel: grpc.Channel) -> None:
    cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
    assert cluster.SetDrainFlag(cluster_pb2.SetDrainFlagRequest(drain_flag=True), timeout=10).success
    try:
        assert (master.data / "queue/drain").exists()
        err = grpc_error(lambda: submit(channel, 0.01))
        assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "Queue drained")
    finally:
        cluster.SetDrainFlag(cluster_pb2.SetDrainFlagRequest(drain_flag=False), timeout=10)
    assert not (master.data / "queue/drain").exists()
    assert submit(channel, 0.01) > 0


def test_query_cluster_info_names_the_cluster_and_master(channel: grpc.Channel) -> None:
    cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
    info = cluster.QueryClusterInfo(cluster_pb2.QueryClusterInfoRequest(), timeout=10)
    assert (info.name, info.master, info.protocol_version) == ("cluster.example.com", HOST, 3000000)
    assert info.software_version.startswith("3.0") and "hvparams" in info.other.fields


def test_tags_of_an_unknown_node_are_not_found(channel: grpc.Channel) -> None:
    cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
    err = grpc_error(lambda: cluster.QueryTags(cluster_pb2.QueryTagsRequest(kind="node", name="nosuch"),
                                               timeout=10))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Node name nosuch not found")
    metadata = dict(err.trailing_metadata() or ())
    assert metadata["ganeti-error"] == '["OpPrereqError", ["Node name nosuch not found", "unknown_entity"]]'


# -- health, reflection, TLS --------------------------------------------------------------------

def test_health_check_says_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICES):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_master_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answer = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {s.name for s in answer.list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= names


def test_the_cluster_certificate_itself_is_accepted(master: Master) -> None:
    with master.channel(master.server_pem) as ch:
        info = cluster_pb2_grpc.ClusterServiceStub(ch).QueryClusterInfo(cluster_pb2.QueryClusterInfoRequest(),
                                                                        timeout=10)
    assert info.master == HOST


def test_a_client_without_a_certificate_is_refused(master: Master) -> None:
    with master.channel(None) as ch:
        stub = cluster_pb2_grpc.ClusterServiceStub(ch)
        err = grpc_error(lambda: stub.QueryClusterInfo(cluster_pb2.QueryClusterInfoRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_a_foreign_self_signed_certificate_is_refused(master: Master, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pem"
    key, cert = certs.make_self_signed("intruder.example.com")
    foreign.write_bytes(key + cert)
    with master.channel(foreign) as ch:
        stub = cluster_pb2_grpc.ClusterServiceStub(ch)
        err = grpc_error(lambda: stub.QueryClusterInfo(cluster_pb2.QueryClusterInfoRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_signed_by_the_cluster_but_not_a_candidate_is_refused(master: Master,
                                                                            tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    certs.write_client_pem(str(other), str(master.server_pem), "node9-uuid")
    with master.channel(other) as ch:
        stub = cluster_pb2_grpc.ClusterServiceStub(ch)
        err = grpc_error(lambda: stub.QueryClusterInfo(cluster_pb2.QueryClusterInfoRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not the certificate of a master candidate" in (err.details() or "")


# -- one implementation behind both doors ----------------------------------------------------

def as_doubles(value: Any) -> Any:
    if isinstance(value, list):
        return [as_doubles(v) for v in value]
    if isinstance(value, dict):
        return {k: as_doubles(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def test_luxi_and_grpc_give_the_same_answers_about_a_job(master: Master, channel: grpc.Channel) -> None:
    job_id = submit(channel, 0.01, repeat=2)
    watch(channel, job_id)
    fields = ["id", "status", "ops", "opresult", "opstatus", "oplog", "opstart", "opend", "summary",
              "received_ts", "end_ts", "priority"]
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    query = query_pb2_grpc.QueryServiceStub(channel)
    grpc_rows = jobs.QueryJobs(jobs_pb2.QueryJobsRequest(job_ids=objects_pb2.JobIdList(ids=[job_id]),
                                                         fields=fields), timeout=10)
    request = query_pb2.QueryRequest(what="job", fields=fields)
    codec.native_to_list(request.qfilter, ["=", "id", job_id], "qfilter")
    grpc_query = query.Query(request, timeout=10)
    with master.luxi() as luxi:
        luxi_rows = luxi.call("QueryJobs", [[job_id], fields])
        luxi_query = luxi.call("Query", ["job", fields, ["=", "id", job_id]])
    # Rows are google.protobuf.Value lists: the nanosecond reason timestamps inside `ops` (above
    # 2**53) arrive as the nearest double there, as objects.proto says; everything else is exact.
    assert as_doubles(codec.result_from_response(grpc_rows)) == as_doubles(luxi_rows)
    assert as_doubles(codec.result_from_response(grpc_query)) == as_doubles(luxi_query)
    without_ops = [i for i, f in enumerate(fields) if f != "ops"]
    assert [codec.result_from_response(grpc_rows)[0][i] for i in without_ops] == \
        [luxi_rows[0][i] for i in without_ops]
    job = codec.to_native(jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10).job)
    assert [job[f] for f in fields] == luxi_rows[0]


def test_a_job_submitted_over_luxi_is_watched_over_grpc(master: Master, channel: grpc.Channel) -> None:
    with master.luxi() as luxi:
        job_id = luxi.call("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY", "duration": 0.01, "on_master": True,
                                           "repeat": 1}]])
        final = watch(channel, job_id)[-1]
        assert final.status == "success"
        assert luxi.call("QueryJobs", [[job_id], ["status", "oplog"]]) == [
            ["success", [[codec.to_native(e) for e in final.job.oplog[0].entries]]]]


# -- start-up ----------------------------------------------------------------------------------

def test_an_unknown_master_address_stops_the_start_with_the_reason(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    (m.data / "ssconf_node_primary_ips").write_text("node2 127.0.0.9\n")
    done = m.run()
    try:
        assert done.returncode == 1
        assert "has no line for the master node1" in done.stderr and "--grpc-bind" in done.stderr
    finally:
        m.stop()


def test_grpc_bind_and_port_choose_where_the_door_listens(tmp_path: Path) -> None:
    m = make_master(tmp_path)
    (m.data / "ssconf_node_primary_ips").unlink()
    m.address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    done = m.run("--grpc-bind", m.address, "--grpc-port", "18131")
    assert done.returncode == 0, done.stderr
    try:
        with m.channel(m.client_pem, port=18131) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
    finally:
        m.stop()
