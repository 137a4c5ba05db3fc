#!/usr/bin/env node
// A typed gRPC client of the node daemon, in another language than the daemon.
//
// Loads the protos from ../../proto with @grpc/proto-loader, connects with
// mutual TLS (the cluster certificate server.pem as the only trusted root, a
// node's client.pem as the client certificate), calls
// ganeti.node.v1.ClusterService/Version and the NodeService rpc whose legacy
// procedure is node_info, and prints both results as JSON on stdout.
// Exits non-zero, with the reason on stderr, on any error.
//
// Usage: node client.js --address ADDR --port GRPC_PORT --server-cert server.pem
//                       --client-cert client.pem [--file-storage-dir DIR] [--timeout SECONDS]
//                       [--calls version,node_info]
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
// The cluster certificate's CN (noded/certs.py CLUSTER_CERT_CN), whatever address we dial.
const SERVER_NAME = 'ganeti.example.com';

function usage(message) {
  process.stderr.write(`client.js: ${message}\n` +
    'usage: node client.js --address ADDR --port PORT --server-cert PEM --client-cert PEM ' +
    '[--file-storage-dir DIR] [--timeout SECONDS] [--calls version,node_info]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const known = {
    '--address': 'address', '--port': 'port', '--server-cert': 'serverCert',
    '--client-cert': 'clientCert', '--file-storage-dir': 'fileStorageDir', '--timeout': 'timeout',
    '--calls': 'calls',
  };
  const args = { fileStorageDir: '/srv/ganeti/file-storage', timeout: '30', calls: 'version,node_info' };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2);
    if (!(flag in known)) usage(`unknown argument ${argv[i]}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      value = argv[++i];
    }
    args[known[flag]] = value;
  }
  for (const flag of ['--address', '--port', '--server-cert', '--client-cert']) {
    if (args[known[flag]] === undefined) usage(`${flag} is required`);
  }
  if (!/^\d+$/.test(args.port)) usage(`--port must be a number, not ${args.port}`);
  if (!(Number(args.timeout) > 0)) usage(`--timeout must be a positive number, not ${args.timeout}`);
  args.calls = args.calls.split(',').filter((c) => c);
  for (const c of args.calls) {
    if (!['version', 'node_info'].includes(c)) usage(`--calls takes version and/or node_info, not ${c}`);
  }
  return args;
}

// PEM blocks of one kind ("CERTIFICATE", or any "... PRIVATE KEY") from a file
// that may hold a key and certificates together, as Ganeti's pem files do.
function pemBlocks(file, kind) {
  const text = fs.readFileSync(file, 'utf8');
  const re = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----\n?/g;
  const blocks = [];
  for (const m of text.matchAll(re)) {
    if (kind === 'KEY' ? m[1].endsWith('PRIVATE KEY') : m[1] === kind) blocks.push(m[0]);
  }
  if (blocks.length === 0) {
    throw new Error(`${file} holds no ${kind === 'KEY' ? 'private key' : 'certificate'}`);
  }
  return Buffer.from(blocks.join(''));
}

function protoFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...protoFiles(full));
    else if (entry.name.endsWith('.proto')) out.push(path.relative(PROTO_ROOT, full));
  }
  return out.sort();
}

function loadApi() {
  // includeDirs resolves our imports (ganeti/common/v1/legacy.proto...) below
  // proto/. google/protobuf/{descriptor,struct,...}.proto are not there: protobufjs
  // bundles those and uses its own copies before asking the include path.
  const definition = protoLoader.loadSync(protoFiles(PROTO_ROOT), {
    includeDirs: [PROTO_ROOT],
    keepCase: true,      // field names as in the .proto (protocol_version, not protocolVersion)
    longs: String,       // int64 as decimal strings, as the proto3 JSON mapping writes them
    enums: String,
    defaults: true,
  });
  return { definition, api: grpc.loadPackageDefinition(definition) };
}

// -- responses as plain JSON ---------------------------------------------------
// proto-loader gives google.protobuf.Value/Struct/ListValue as their message
// form ({numberValue: 1}, {fields: {...}}); print them as the JSON they carry,
// walking the message types so that only those well-known types are rewritten.

function wellKnownValue(v) {
  if (v === null || v === undefined) return null;
  const get = (camel, snake) => (v[camel] !== undefined && v[camel] !== null ? v[camel] : v[snake]);
  const struct = get('structValue', 'struct_value');
  const list = get('listValue', 'list_value');
  if (struct !== undefined && struct !== null) return wellKnownStruct(struct);
  if (list !== undefined && list !== null) return wellKnownList(list);
  for (const [camel, snake] of [['numberValue', 'number_value'], ['stringValue', 'string_value'],
    ['boolValue', 'bool_value']]) {
    const x = get(camel, snake);
    if (x !== undefined && x !== null) return x;
  }
  return null;
}

function wellKnownStruct(s) {
  if (s === null || s === undefined) return null;
  return Object.fromEntries(Object.entries(s.fields || {}).map(([k, v]) => [k, wellKnownValue(v)]));
}

function wellKnownList(l) {
  return l === null || l === undefined ? null : (l.values || []).map(wellKnownValue);
}

const WELL_KNOWN = {
  'google.protobuf.Value': wellKnownValue,
  'google.protobuf.Struct': wellKnownStruct,
  'google.protobuf.ListValue': wellKnownList,
};

// The full name a field's (possibly relative) type name refers to, seen from message `scope`.
function resolveType(definition, scope, typeName) {
  if (typeName.startsWith('.')) return typeName.slice(1);
  const parts = scope.split('.');
  for (let i = parts.length; i >= 0; i--) {
    const candidate = [...parts.slice(0, i), typeName].join('.');
    if (definition[candidate] || WELL_KNOWN[candidate]) return candidate;
  }
  return typeName;
}

function plain(definition, typeName, message) {
  if (message === null || message === undefined) return null;
  if (WELL_KNOWN[typeName]) return WELL_KNOWN[typeName](message);
  const type = definition[typeName];
  if (!type || !type.type || !Array.isArray(type.type.field)) return message;
  const out = {};
  for (const field of type.type.field) {
    const value = message[field.name];
    if (field.type !== 'TYPE_MESSAGE' || value === null || value === undefined) {
      out[field.name] = value;
      continue;
    }
    const fieldType = resolveType(definition, typeName, field.typeName);
    const entry = definition[fieldType];
    const isMap = entry && entry.type && entry.type.options && entry.type.options.mapEntry;
    if (isMap) {
      const valueField = entry.type.field.find((f) => f.name === 'value');
      const valueType = valueField && valueField.type === 'TYPE_MESSAGE'
        ? resolveType(definition, fieldType, valueField.typeName) : null;
      out[field.name] = Object.fromEntries(Object.entries(value).map(
        ([k, v]) => [k, valueType ? plain(definition, valueType, v) : v]));
    } else if (field.label === 'LABEL_REPEATED') {
      out[field.name] = value.map((v) => plain(definition, fieldType, v));
    } else {
      out[field.name] = plain(definition, fieldType, value);
    }
  }
  return out;
}

function lookup(api, dotted) {
  const found = dotted.split('.').reduce((obj, key) => (obj ? obj[key] : undefined), api);
  if (!found) throw new Error(`${dotted} is not defined in the protos under ${PROTO_ROOT}`);
  return found;
}

// The rpc of `Service` whose (ganeti.common.v1.legacy) option names `procedure`.
function rpcForProcedure(Service, procedure) {
  for (const [name, method] of Object.entries(Service.service)) {
    const legacy = (method.options || {})['(ganeti.common.v1.legacy)'];
    if (legacy && legacy.name === procedure) return name;
  }
  throw new Error(`no rpc of ${Service.serviceName} has legacy procedure ${procedure}`);
}

// The full name of a method's response type. proto-loader keeps only the
// short name there; prefer the type of that name in the service's package.
function responseTypeName(definition, methodDefinition) {
  const shortName = methodDefinition.responseType.type.name;
  const servicePackage = methodDefinition.path.slice(1).split('/')[0].split('.').slice(0, -1).join('.');
  const candidates = Object.keys(definition).filter(
    (k) => definition[k].type && definition[k].type.name === shortName && k.endsWith(`.${shortName}`));
  return candidates.find((k) => k === `${servicePackage}.${shortName}`) || candidates[0];
}

// Calls `method` and returns its response as plain JSON.
function call(definition, client, method, request, timeoutSeconds) {
  const responseName = responseTypeName(definition, client.constructor.service[method]);
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutSeconds * 1000);
    client[method](request, { deadline }, (err, response) => {
      if (err) {
        reject(new Error(`${method} failed: ${grpc.status[err.code] || err.code}: ${err.details || err.message}`));
      } else {
        resolve(plain(definition, responseName, response));
      }
    });
  });
}

// The NodeInfoRequest (proto/ganeti/node/v1/node.proto) for the legacy
// arguments [[["file", dir, []]], [["fake", {}]]]: one file storage unit
// (StorageUnit, params an empty ListValue) and the fake hypervisor
// (HypervisorSpec, hvparams an empty Struct).
function nodeInfoRequest(fileStorageDir) {
  return {
    storage_units: { units: [{ storage_type: 'file', key: fileStorageDir, params: { values: [] } }] },
    hv_specs: { specs: [{ hv_name: 'fake', hvparams: { fields: {} } }] },
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { definition, api } = loadApi();
  const credentials = grpc.credentials.createSsl(
    pemBlocks(args.serverCert, 'CERTIFICATE'),
    pemBlocks(args.clientCert, 'KEY'),
    pemBlocks(args.clientCert, 'CERTIFICATE'),
  );
  const target = args.address.includes(':') ? `[${args.address}]:${args.port}` : `${args.address}:${args.port}`;
  const options = { 'grpc.ssl_target_name_override': SERVER_NAME, 'grpc.default_authority': SERVER_NAME };
  const timeout = Number(args.timeout);

  const ClusterService = lookup(api, 'ganeti.node.v1.ClusterService');
  const NodeService = lookup(api, 'ganeti.node.v1.NodeService');
  const nodeInfoRpc = rpcForProcedure(NodeService, 'node_info');
  const cluster = new ClusterService(target, credentials, options);
  const node = new NodeService(target, credentials, options);
  try {
    const result = {};
    if (args.calls.includes('version')) {
      result.version = await call(definition, cluster, 'Version', {}, timeout);
    }
    if (args.calls.includes('node_info')) {
      result.node_info_rpc = nodeInfoRpc;
      const request = nodeInfoRequest(args.fileStorageDir);
      result.node_info = await call(definition, node, nodeInfoRpc, request, timeout);
    }
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    cluster.close();
    node.close();
  }
}

main().catch((err) => {
  process.stderr.write(`client.js: ${err.message}\n`);
  process.exit(1);
});
