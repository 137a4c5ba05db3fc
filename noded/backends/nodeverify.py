"""The checks of node_verify: what `gnt-cluster verify` asks each node.

The master sends a dict of check name -> parameters; the answer has one
entry per check that ran, with Ganeti 3.0.2's result shapes. Checks that
need a technology this node daemon does not drive answer as a Ganeti node
without it (no LVM volume groups, no DRBD module). Checks that would need
ssh (`nodelist`) answer as Ganeti does when ssh fails; the ssh key file
checks (`ssh-setup`, `ssh-clutter`) only read files and run for real.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from noded import certs
from noded.backends import netcheck
from noded.backends.osdiag import os_diagnose_list, os_search_path
from noded.backends.storagepaths import (
    check_file_storage_path,
    load_allowed_storage_paths,
    node_path,
    wrong_storage_paths,
)
from noded.backends.unsupported import drbd_proc_status, drbd_usermode_helper
from noded.context import PROTOCOL_VERSION, RELEASE_VERSION, NodeContext
from noded.hypervisor import HypervisorError, get_hypervisor, get_hypervisor_class
from noded.paths import Paths

CV_ERROR = "ERROR"
CV_WARNING = "WARNING"

#: Days before expiry at which the client certificate is reported (Ganeti's SSL_CERT_EXPIRATION_*).
CERT_EXPIRATION_WARN_DAYS = 30
CERT_EXPIRATION_ERROR_DAYS = 7
#: Seconds of clock skew tolerated between nodes (Ganeti's NODE_MAX_CLOCK_SKEW).
NODE_MAX_CLOCK_SKEW = 150
RSA_KEY_BITS = 2048

#: Authorized-keys key types whose lines are compared on their two significant fields.
SSH_AUTHORIZED_KEY_TYPES = frozenset({"ssh-dss", "ssh-rsa"})
SSH_KEY_KINDS = ("dsa", "ecdsa", "rsa")


# -- client certificate --------------------------------------------------------

def _format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _cert_validity(cert: x509.Certificate) -> tuple[str | None, str]:
    now = time.time()
    not_before = cert.not_valid_before_utc.timestamp()
    not_after = cert.not_valid_after_utc.timestamp()
    if datetime.now(UTC) > cert.not_valid_after_utc:
        return CV_ERROR, (f"Certificate is expired (valid from {_format_time(not_before)}"
                          f" to {_format_time(not_after)})")
    skewed = now + NODE_MAX_CLOCK_SKEW
    if not_before > skewed:
        return CV_WARNING, f"Certificate not yet valid (valid from {_format_time(not_before)})"
    remaining = int((not_after - skewed) / (24 * 3600))
    msg = f"Certificate expires in about {remaining} days"
    if remaining <= CERT_EXPIRATION_ERROR_DAYS:
        return CV_ERROR, msg
    if remaining <= CERT_EXPIRATION_WARN_DAYS:
        return CV_WARNING, msg
    return None, ""


def _cert_strength(cert: x509.Certificate) -> str | None:
    warnings = []
    if cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA1:
        warnings.append("weak signature algorithm 'sha1WithRSAEncryption', consider running"
                        " gnt-cluster renew-crypto")
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < RSA_KEY_BITS:
        warnings.append(f"weak public/private keypair: {key.key_size} bits, should be at least"
                        f" {RSA_KEY_BITS} bits, consider running gnt-cluster renew-crypto")
    return ", ".join(warnings) or None


def verify_client_certificate(cert_file: str) -> list[Any]:
    """`[None, "AA:BB:..."]` for a good client certificate, else `[CV_ERROR|CV_WARNING, message]`."""
    create_cmd = "gnt-cluster renew-crypto --new-node-certificates"
    if not os.path.exists(cert_file):
        return [CV_ERROR, f"The client certificate does not exist. Run '{create_cmd}' to create"
                          f" client certificates for all nodes."]
    try:
        with open(cert_file, "rb") as f:
            pem = f.read()
        cert = certs.load_first_cert(pem)
    except Exception as err:  # any load failure is reported
        return [CV_ERROR, f"Failed to load X509 certificate {cert_file}: {err}"]
    level, msg = _cert_validity(cert)
    weak = _cert_strength(cert)
    if weak and level is None:
        level, msg = CV_WARNING, weak
    elif weak and level == CV_WARNING:
        msg = f"{msg}, {weak}"
    if level is not None:
        return [level, f"While verifying {cert_file}: {msg}"]
    subject_cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    issuer_cn = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if [a.value for a in subject_cn] == [a.value for a in issuer_cn]:
        return [CV_WARNING, f"The certificate '{cert_file}' is self-signed. Please run 'gnt-cluster"
                            f" renew-crypto --new-node-certificates' to get a properly signed"
                            f" certificate."]
    return [None, certs.fingerprint_pem(pem)]


# -- ssh key files ----------------------------------------------------------------

def _split_authorized_key(line: str) -> tuple[bool, list[str]]:
    parts = line.split()
    if parts and parts[0] in SSH_AUTHORIZED_KEY_TYPES:
        return False, parts[:2]
    return True, parts


def _read_pub_key_file(path: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    with open(path) as f:
        for line in f:
            if not line.rstrip():
                continue
            chunks = line.split(" ")
            if len(chunks) < 2:
                raise ValueError(f"Error parsing public SSH key file. Line: '{line}'")
            keys.setdefault(chunks[0], []).append(" ".join(chunks[1:]).rstrip())
    return keys


def verify_ssh_setup(paths: Paths, node_status_list: Sequence[Sequence[Any]] | None, my_name: str,
                     key_type: str) -> list[str]:
    """Problems with the cluster's SSH key files on this node (Ganeti's _VerifySshSetup)."""
    if node_status_list is None:
        return ["No node list to check against the pub_key_file received."]
    mine = [entry for entry in node_status_list if entry[1] == my_name]
    if not mine:
        return [f"Cannot find node information for node '{my_name}'."]
    my_uuid, _, _, potential_mc, _ = mine[0]
    pub_keys_file = os.path.join(paths.data_dir, "ganeti_pub_keys")
    if not os.path.exists(pub_keys_file):
        return [f"The public key file '{pub_keys_file}' does not exist. Consider running"
                f" 'gnt-cluster renew-crypto --new-ssh-keys [--no-ssh-key-check]' to fix this."]
    result: list[str] = []
    try:
        pub_keys = _read_pub_key_file(pub_keys_file)
    except (OSError, ValueError) as err:
        return [f"The public key file '{pub_keys_file}' cannot be read: {err}"]
    offline = {e[0] for e in node_status_list if not e[4]}
    missing: set[str] = set()
    if potential_mc:
        listed = set(pub_keys) - offline
        expected = {e[0] for e in node_status_list} - offline
        where = f"{my_name}:{pub_keys_file}"
        if listed != expected:
            unknown = listed - expected
            if unknown:
                result.append(f"The following node UUIDs are listed in the shared public keys file"
                              f" {where}, but are not potential master candidates: {', '.join(unknown)}.")
            missing = expected - listed
            if missing:
                result.append(f"The following node UUIDs of potential master candidates are missing"
                              f" in the shared public keys file {where}: {', '.join(missing)}.")
        if key_type not in SSH_KEY_KINDS:
            result.append(f"Unknown SSH key type '{key_type}'.")
        else:
            own_pub = os.path.join(paths.root_ssh_dir, f"id_{key_type}.pub")
            own_where = f"{my_name}:{own_pub}"
            my_keys = pub_keys.get(my_uuid, [])
            try:
                with open(own_pub) as f:
                    own_key = f.read().strip()
            except OSError as err:
                result.append(f"The public SSH key file {own_where} cannot be read: {err}.")
            else:
                if own_key not in my_keys:
                    result.append(f"The key for node {my_name} in the cluster config does not match"
                                  f" this node's key in the node public key file {own_where}.")
            if len(my_keys) != 1:
                result.append(f"There is more than one key for node {my_name} in the node public"
                              f" key file {own_where}.")
    elif pub_keys:
        result.append(f"The public key file {my_name}:{pub_keys_file} is not empty, although the node"
                      f" is not a potential master candidate.")
    auth_file = os.path.join(paths.root_ssh_dir, "authorized_keys")
    try:
        with open(auth_file) as f:
            authorized = {tuple(_split_authorized_key(line)[1]) for line in f}
    except OSError as err:
        result.append(f"The 'authorized_keys' file {my_name}:{auth_file} cannot be read: {err}.")
        return result
    for uuid, name, mc, _, online in node_status_list:
        if not online or uuid in missing:
            continue
        for key in pub_keys.get(uuid, []):
            has = tuple(_split_authorized_key(key)[1]) in authorized
            if mc and not has:
                result.append(f"A SSH key of master candidate '{name}' (UUID: '{uuid}') is not in the"
                              f" 'authorized_keys' file of node '{my_name}'.")
            elif not mc and name != my_name and has:
                result.append(f"A SSH key of normal node '{name}' (UUID: '{uuid}') is in the"
                              f" 'authorized_keys' file of node '{my_name}'.")
            elif not mc and name == my_name and not has:
                result.append(f"A SSH key of normal node '{my_name}' (UUID: '{uuid}') is not in the"
                              f" 'authorized_keys' file of itself.")
    return result


def verify_ssh_clutter(paths: Paths, node_status_list: Sequence[Sequence[Any]] | None,
                       my_name: str) -> list[str]:
    """Hosts with more than one key in root's authorized_keys (Ganeti's _VerifySshClutter)."""
    names = {entry[1] for entry in node_status_list or []}
    auth_file = os.path.join(paths.root_ssh_dir, "authorized_keys")
    occurrences: dict[str, list[int]] = {}
    try:
        with open(auth_file) as f:
            for index, line in enumerate(f, start=1):
                if line.startswith("#"):
                    continue
                tagged = [chunk.strip() for chunk in line.split() if "@" in chunk]
                if tagged:
                    occurrences.setdefault(tagged[0], []).append(index)
    except OSError as err:
        return [f"The 'authorized_keys' file {my_name}:{auth_file} cannot be read: {err}."]
    bad = {who: lines for who, lines in occurrences.items()
           if who.split("@", 1)[1] in names and len(lines) > 1}
    if not bad:
        return []
    msg = (f"There are hosts which have more than one SSH key stored for the same user in the"
           f" 'authorized_keys' file of node {my_name}. This can be due to an unsuccessful operation"
           f" which cluttered up the 'authorized_keys' file. We recommend to clean this up manually. ")
    for who, lines in bad.items():
        msg += f"Entry for '{who}' in lines {', '.join(map(str, lines))}. "
    return [msg]


def ssh_problem(node: str) -> str:
    """The `nodelist` answer for one node: this daemon does not check ssh, said as an ssh failure."""
    return (f"ssh problem: ssh connectivity to {node} is not checked by this node daemon (it has no"
            f" ssh client support); check 'ssh root@{node} hostname' from this node by hand")


# -- the other checks ------------------------------------------------------------

def file_fingerprints(paths: Paths, files: Sequence[str]) -> dict[str, str]:
    """SHA1 (hex) of each existing regular file, keyed by the name the master sent."""
    result = {}
    for name in files:
        local = node_path(paths, name)
        if not os.path.isfile(local):
            continue
        digest = hashlib.sha1()
        with open(local, "rb") as f:
            for chunk in iter(lambda: f.read(65536), b""):
                digest.update(chunk)
        result[name] = digest.hexdigest()
    return result


def net_test(ctx: NodeContext, my_name: str, test: Sequence[Any]) -> dict[str, str]:
    """Reachability of the other nodes' noded port over their primary (and secondary) address."""
    nodes, master_candidates = test
    if my_name not in master_candidates:
        return {}
    mine = [(pip, sip) for (name, pip, sip) in nodes if name == my_name]
    if not mine or not mine[0][0]:
        return {my_name: "Can't find my own primary/secondary IP in the node list"}
    my_pip, my_sip = mine[0]
    primary_ok = netcheck.tcp_ping_many([(pip, ctx.port, my_pip) for (_, pip, _) in nodes])
    result = {}
    for (name, pip, sip), ok in zip(nodes, primary_ok, strict=True):
        if ok:
            continue
        fail = ["primary"]
        if sip != pip and not netcheck.tcp_ping(sip, ctx.port, source=my_sip):
            fail.append("secondary")
        result[name] = f"failure using the {' and '.join(fail)} interface(s)"
    return result


def master_ip_test(ctx: NodeContext, my_name: str, test: Sequence[Any]) -> bool | None:
    """Whether the master IP answers on the noded port (None unless this node is a candidate)."""
    master_name, master_ip, master_candidates = test
    if my_name not in master_candidates:
        return None
    source = "127.0.0.1" if master_name == my_name else None
    return netcheck.tcp_ping(master_ip, ctx.port, source=source)


def oob_path_problems(oob_paths: Sequence[str]) -> list[str | None]:
    """None per usable out-of-band helper, else what is wrong with it."""
    result: list[str | None] = []
    for path in oob_paths:
        try:
            st = os.stat(path)
        except OSError as err:
            result.append(f"error stating out of band helper: {err}")
            continue
        if not os.path.isfile(path):
            result.append(f"out of band helper {path} is not a file")
        elif not st.st_mode & 0o100:
            result.append(f"out of band helper {path} is not executable")
        else:
            result.append(None)
    return result


def node_setup_problems() -> list[str]:
    """Missing kernel interfaces Ganeti needs (/sys, /proc/sys, SysRq)."""
    problems = []
    if not os.path.isdir("/sys/block") or not os.path.isdir("/sys/class/net"):
        problems.append("The sysfs filesytem doesn't seem to be mounted under /sys, missing required"
                        " directories /sys/block and /sys/class/net")
    if not os.path.isdir("/proc/sys") or not os.path.isfile("/proc/sysrq-trigger"):
        problems.append("The procfs filesystem doesn't seem to be mounted under /proc, missing required"
                        " directory /proc/sys and the file /proc/sysrq-trigger")
    return problems


def bridge_exists(name: str) -> bool:
    """Whether network bridge `name` exists on this machine."""
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def split_time(value: float) -> list[int]:
    """[seconds, microseconds] of a time stamp."""
    seconds, micro = divmod(int(value * 1000000), 1000000)
    return [int(seconds), int(micro)]


class InstanceListError(Exception):
    """The instances of a hypervisor could not be listed."""


def list_instances(paths: Paths, hypervisors: Sequence[str],
                   all_hvparams: Mapping[str, Any] | None) -> list[str]:
    """Names of the running instances of the given hypervisors; raises InstanceListError."""
    names: list[str] = []
    for hv_name in hypervisors:
        hvparams = (all_hvparams or {}).get(hv_name)
        try:
            names.extend(get_hypervisor(hv_name, paths).list_instances(hvparams))
        except HypervisorError as err:
            raise InstanceListError(f"Error enumerating instances (hypervisor {hv_name}): {err}") from err
    return names


# -- the whole verification ------------------------------------------------------

def verify_node(ctx: NodeContext, what: Mapping[str, Any], cluster_name: str,
                all_hvparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run the requested checks; one result entry per check that applies to this node."""
    paths = ctx.paths
    hvparams_of = all_hvparams or {}
    my_name = ctx.hostname
    vm_capable = my_name not in (what.get("nonvmnodes") or [])
    result: dict[str, Any] = {}

    if vm_capable and "hypervisor" in what:
        hv_result: dict[str, Any] = {}
        for hv_name in what["hypervisor"]:
            try:
                hv_result[hv_name] = get_hypervisor(hv_name, paths).verify(hvparams_of.get(hv_name))
            except HypervisorError as err:
                hv_result[hv_name] = f"Error while checking hypervisor: {err}"
        result["hypervisor"] = hv_result

    if vm_capable and "hvparms" in what:
        problems = []
        for source, hv_name, hvparams in what["hvparms"]:
            try:
                get_hypervisor_class(hv_name).validate_parameters(hvparams)
            except HypervisorError as err:
                problems.append([source, hv_name, str(err)])
            except KeyError as err:  # Ganeti fails the whole call here; report it instead
                problems.append([source, hv_name, f"Parameter {err} is missing"])
        result["hvparms"] = problems

    if "filelist" in what:
        result["filelist"] = file_fingerprints(paths, what["filelist"])

    if "client-cert" in what:
        result["client-cert"] = verify_client_certificate(paths.client_cert)

    if "ssh-setup" in what:
        node_status_list, key_type = what["ssh-setup"]
        result["ssh-setup"] = verify_ssh_setup(paths, node_status_list, my_name, key_type)
        if "ssh-clutter" in what:
            result["ssh-clutter"] = verify_ssh_clutter(paths, node_status_list, my_name)

    if "nodelist" in what:
        nodes, bynode, master_candidates = what["nodelist"]
        targets = list(nodes) + list((bynode or {}).get(my_name, []))
        result["nodelist"] = ({node: ssh_problem(node) for node in targets}
                              if my_name in master_candidates else {})

    if "node-net-test" in what:
        result["node-net-test"] = net_test(ctx, my_name, what["node-net-test"])

    if "master-ip" in what:
        result["master-ip"] = master_ip_test(ctx, my_name, what["master-ip"])

    if "user-scripts" in what:
        result["user-scripts"] = [s for s in what["user-scripts"]
                                  if not (os.path.isfile(s) and os.access(s, os.X_OK))]

    if "oob-paths" in what:
        result["oob-paths"] = oob_path_problems(what["oob-paths"])

    if vm_capable and "lvlist" in what:
        result["lvlist"] = {}  # no volume groups on this node

    if vm_capable and "instancelist" in what:
        try:
            result["instancelist"] = list_instances(paths, what["instancelist"], hvparams_of)
        except InstanceListError as err:
            result["instancelist"] = str(err)

    if vm_capable and "vglist" in what:
        result["vglist"] = {}

    if vm_capable and "pvlist" in what:
        if "exclusive-pvs" in what:
            result["exclusive-pvs"] = []
        result["pvlist"] = []

    if "version" in what:
        result["version"] = [PROTOCOL_VERSION, RELEASE_VERSION]

    if vm_capable and "hvinfo" in what:
        hv_name = what["hvinfo"]
        result["hvinfo"] = get_hypervisor(hv_name, paths).node_info(hvparams_of.get(hv_name))

    if vm_capable and "drbd-version" in what:
        result["drbd-version"] = drbd_proc_status()

    if vm_capable and "drbd-list" in what:
        result["drbd-list"] = drbd_proc_status()

    if vm_capable and "drbd-helper" in what:
        try:
            result["drbd-helper"] = [True, drbd_usermode_helper()]
        except Exception as err:  # reported, as Ganeti does
            result["drbd-helper"] = [False, str(err)]

    if "nodesetup" in what:
        result["nodesetup"] = node_setup_problems()

    if "time" in what:
        result["time"] = split_time(time.time())

    if vm_capable and "oslist" in what:
        result["oslist"] = os_diagnose_list(os_search_path(paths))

    if vm_capable and "bridges" in what:
        result["bridges"] = [b for b in what["bridges"] if not bridge_exists(b)]

    if what.get("allowed-file-storage-paths") == my_name:
        result["allowed-file-storage-paths"] = wrong_storage_paths(paths, load_allowed_storage_paths(paths))

    for key in ("file-storage-path", "shared-file-storage-path"):
        if what.get(key):
            problem = check_file_storage_path(paths, node_path(paths, what[key]))
            if problem:
                result[key] = problem

    return result
