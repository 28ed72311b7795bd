// Validates Kubernetes manifests (multi-document YAML files) offline, for validate-deploy.sh.
//
//   node scripts/validate_manifests.mjs --tools DIR --configs-out DIR [--tls-files-out FILE] FILE...
//
// DIR (--tools) holds the npm packages validate-deploy.sh installed:
//   - kubernetes-models: the OpenAPI schema of each kind compiled to validators (types,
//     enums, required fields);
//   - @kubernetes/client-node: the OpenAPI type map of every model (each field's JSON name
//     and type), used for a strict walk that refuses unknown fields and wrong types at any
//     depth, as `kubectl apply --validate=strict` would;
//   - yaml: the YAML parser (duplicate keys are errors).
// Prometheus Operator kinds (PodMonitor, ServiceMonitor) are CRDs with no schema in those
// packages: a minimal hand-written type map below covers the fields we use.
//
// On top of the schemas, every container that runs Bulwark (its image or name contains
// "bulwark" and it is given a config with -c) is held to the deployment rules of
// docs/kubernetes.md: native sidecar, probes on /ready and /healthz, restricted
// securityContext, config from a ConfigMap mounted as a directory, a grace period
// longer than the config's drain.delay + drain.timeout, and every TLS file the config names
// (listener cert/key/client_ca, upstream ca/cert/key) inside a volumeMount of the container
// that is a directory (no subPath: certificate renewals must arrive), a private key not from
// a ConfigMap, and a file from a ConfigMap volume one of its keys.
//
// Each ConfigMap key that holds a Bulwark config (bulwark.yaml) is written to --configs-out
// as SOURCE--CONFIGMAP--KEY, for `bulwark --check`; the TLS files those configs name, one
// "cert PATH" or "key PATH" line each, to --tls-files-out. Exit 1 with one line per problem.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
let tools = null;
let configsOut = null;
let tlsFilesOut = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--tools') tools = args[++i];
  else if (args[i] === '--configs-out') configsOut = args[++i];
  else if (args[i] === '--tls-files-out') tlsFilesOut = args[++i];
  else files.push(args[i]);
}
if (!tools || files.length === 0) {
  console.error('usage: validate_manifests.mjs --tools DIR [--configs-out DIR] FILE...');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(tools), 'package.json'));
const YAML = require('yaml');
const modelsDir = path.join(path.dirname(require.resolve('@kubernetes/client-node/package.json')),
                            'dist', 'gen', 'models');
const models = await import(pathToFileURL(path.join(modelsDir, 'ObjectSerializer.js')).href);

const problems = [];
let checkedDocs = 0;
const configs = [];
const tlsFileLines = new Set();

// ---- the strict walk -------------------------------------------------------------------

// Minimal schemas of the Prometheus Operator kinds we render, in the same form as the
// client-node type map ([{baseName, type}]) plus the required fields.
const crds = {
  'monitoring.coreos.com/v1/PodMonitor': 'MonPodMonitor',
  'monitoring.coreos.com/v1/ServiceMonitor': 'MonServiceMonitor',
};
const fields = (o) => Object.entries(o).map(([baseName, type]) => ({ baseName, type }));
const extraTypes = {
  MonPodMonitor: { map: fields({ apiVersion: 'string', kind: 'string', metadata: 'V1ObjectMeta', spec: 'MonPodMonitorSpec' }), required: ['spec'] },
  MonServiceMonitor: { map: fields({ apiVersion: 'string', kind: 'string', metadata: 'V1ObjectMeta', spec: 'MonServiceMonitorSpec' }), required: ['spec'] },
  MonPodMonitorSpec: {
    map: fields({ selector: 'V1LabelSelector', namespaceSelector: 'MonNamespaceSelector', podMetricsEndpoints: 'Array<MonEndpoint>',
                  jobLabel: 'string', podTargetLabels: 'Array<string>', sampleLimit: 'number', targetLimit: 'number' }),
    required: ['selector', 'podMetricsEndpoints'],
  },
  MonServiceMonitorSpec: {
    map: fields({ selector: 'V1LabelSelector', namespaceSelector: 'MonNamespaceSelector', endpoints: 'Array<MonEndpoint>',
                  jobLabel: 'string', targetLabels: 'Array<string>', podTargetLabels: 'Array<string>', sampleLimit: 'number', targetLimit: 'number' }),
    required: ['selector', 'endpoints'],
  },
  MonNamespaceSelector: { map: fields({ any: 'boolean', matchNames: 'Array<string>' }), required: [] },
  MonEndpoint: {
    map: fields({ port: 'string', portNumber: 'number', targetPort: 'IntOrString', path: 'string', scheme: 'string',
                  interval: 'string', scrapeTimeout: 'string', honorLabels: 'boolean', honorTimestamps: 'boolean',
                  params: '{ [key: string]: Array<string>; }', relabelings: 'Array<any>', metricRelabelings: 'Array<any>' }),
    required: [],
  },
};

function typeInfo(name) {
  if (extraTypes[name]) return extraTypes[name];
  const cls = models[name];
  if (cls && typeof cls.getAttributeTypeMap === 'function') return { map: cls.getAttributeTypeMap(), required: [] };
  return null;
}

const kindOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function walk(value, type, where, report) {
  if (value === null || type === 'any' || type === 'object') return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (!Array.isArray(value)) return report(`${where}: expected an array, found ${kindOf(value)}`);
    value.forEach((v, i) => walk(v, m[1], `${where}[${i}]`, report));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (kindOf(value) !== 'object') return report(`${where}: expected a map, found ${kindOf(value)}`);
    for (const [k, v] of Object.entries(value)) walk(v, m[1], `${where}.${k}`, report);
    return;
  }
  switch (type) {
    case 'string': case 'Date':
      if (typeof value !== 'string') report(`${where}: expected a string, found ${kindOf(value)} ${JSON.stringify(value)}`);
      return;
    case 'number':
      if (typeof value !== 'number') report(`${where}: expected a number, found ${kindOf(value)} ${JSON.stringify(value)}`);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') report(`${where}: expected a boolean, found ${kindOf(value)} ${JSON.stringify(value)}`);
      return;
    case 'IntOrString':
      if (typeof value !== 'string' && typeof value !== 'number') report(`${where}: expected an integer or a string, found ${kindOf(value)}`);
      return;
  }
  const info = typeInfo(type);
  if (!info) {
    // Enum aliases of the generator (e.g. ...Enum) are strings.
    if (typeof value !== 'string') report(`${where}: expected a string (${type}), found ${kindOf(value)}`);
    return;
  }
  if (kindOf(value) !== 'object') return report(`${where}: expected an object (${type}), found ${kindOf(value)}`);
  const byName = new Map(info.map.map((f) => [f.baseName, f.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!byName.has(k)) {
      report(`${where}.${k}: unknown field (not in ${type})`);
      continue;
    }
    walk(v, byName.get(k), `${where}.${k}`, report);
  }
  for (const r of info.required) if (!(r in value)) report(`${where}.${r}: required field missing`);
}

// ---- kubernetes-models' compiled OpenAPI validators ------------------------------------

function modelValidate(doc, report) {
  const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : [null, doc.apiVersion];
  const modPath = group ? `kubernetes-models/${group}/${version}/${doc.kind}` : `kubernetes-models/${version}/${doc.kind}`;
  let mod;
  try {
    mod = require(modPath);
  } catch {
    return false;
  }
  const Cls = mod[doc.kind] || mod.default;
  try {
    new Cls(doc).validate();
  } catch (e) {
    const errs = e.errors || [];
    if (errs.length === 0) report(`${e.message}`);
    for (const er of errs) {
      const at = (er.instancePath || '').replace(/\//g, '.') || '.';
      report(`${at}: ${er.message || er.keyword}${er.params ? ' ' + JSON.stringify(er.params) : ''}`);
    }
  }
  return true;
}

// ---- Bulwark's deployment rules ---------------------------------------------------------

function seconds(d) {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(String(d ?? ''));
  if (!m) return null;
  const n = Number(m[1]);
  return { undefined: n, ms: n / 1000, s: n, m: n * 60, h: n * 3600 }[m[2]];
}

// The files a Bulwark config's tls blocks name: [{ path, at, kind: 'cert' | 'key' }]
// (ca and client_ca are certificates; `ca: system` is the image's bundle, not a file).
function tlsFilesOf(cfg) {
  const out = [];
  const add = (tls, at, keys) => {
    if (kindOf(tls) !== 'object') return;
    for (const k of keys) {
      const p = tls[k];
      if (typeof p !== 'string' || p === '' || (k === 'ca' && p === 'system')) continue;
      out.push({ path: p, at: `${at}.tls.${k}`, kind: k === 'key' ? 'key' : 'cert' });
    }
  };
  (Array.isArray(cfg?.listeners) ? cfg.listeners : []).forEach((l, i) => add(l?.tls, `listeners[${i}]`, ['cert', 'key', 'client_ca']));
  (Array.isArray(cfg?.upstreams) ? cfg.upstreams : []).forEach((u, i) => add(u?.tls, `upstreams[${i}]`, ['ca', 'cert', 'key']));
  return out;
}

function podSpecOf(doc) {
  if (doc.kind === 'Pod') return doc.spec;
  if (['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job'].includes(doc.kind)) return doc.spec?.template?.spec;
  return null;
}

function checkBulwarkPod(spec, cmConfigs, cmKeys, report) {
  const all = [...(spec.initContainers || []).map((c) => [c, 'initContainers']), ...(spec.containers || []).map((c) => [c, 'containers'])];
  for (const [c, list] of all) {
    const argv = [...(c.command || []), ...(c.args || [])];
    if (!/bulwark/.test(`${c.image} ${c.name}`) || !argv.includes('-c')) continue;
    const at = `spec.${list}[${c.name}]`;
    const need = (ok, msg) => { if (!ok) report(`${at}: ${msg}`); };
    need(list === 'initContainers' && c.restartPolicy === 'Always', 'Bulwark must be a native sidecar (initContainers with restartPolicy: Always)');
    const probe = (p) => p?.httpGet?.path;
    need(probe(c.startupProbe) === '/ready', 'startupProbe must GET /ready');
    need(probe(c.readinessProbe) === '/ready', 'readinessProbe must GET /ready');
    need(probe(c.livenessProbe) === '/healthz', 'livenessProbe must GET /healthz');
    need(c.resources?.requests && c.resources?.limits, 'resources.requests and resources.limits must be set');
    const sc = c.securityContext || {};
    const psc = spec.securityContext || {};
    need((sc.runAsNonRoot ?? psc.runAsNonRoot) === true, 'securityContext.runAsNonRoot must be true');
    need(sc.readOnlyRootFilesystem === true, 'securityContext.readOnlyRootFilesystem must be true');
    need(sc.allowPrivilegeEscalation === false, 'securityContext.allowPrivilegeEscalation must be false');
    need((sc.capabilities?.drop || []).includes('ALL'), 'securityContext.capabilities.drop must include ALL');
    need((sc.seccompProfile ?? psc.seccompProfile)?.type === 'RuntimeDefault', 'seccompProfile.type must be RuntimeDefault');
    const cfgArg = argv[argv.indexOf('-c') + 1] || '';
    const mount = (c.volumeMounts || []).find((m) => cfgArg.startsWith(m.mountPath.replace(/\/?$/, '/')));
    if (!mount) { report(`${at}: no volumeMount holds the config ${cfgArg}`); continue; }
    need(!mount.subPath && !mount.subPathExpr, `volumeMount ${mount.name} must not use subPath (a ConfigMap update would never arrive)`);
    const vol = (spec.volumes || []).find((v) => v.name === mount.name);
    if (!vol?.configMap) { report(`${at}: volume ${mount.name} must be a ConfigMap`); continue; }
    const key = path.basename(cfgArg);
    const cfg = cmConfigs.get(`${vol.configMap.name}/${key}`);
    if (!cfg) { report(`${at}: ConfigMap ${vol.configMap.name} with key ${key} is not among the validated manifests`); continue; }
    const adminListen = String(cfg.admin?.listen ?? '127.0.0.1:9901');
    need(adminListen.startsWith('0.0.0.0:') || adminListen.startsWith('[::]:'), `admin.listen ${adminListen} is not reachable by kubelet probes (use 0.0.0.0:PORT)`);
    const delay = seconds(cfg.drain?.delay ?? '0') ?? 0;
    const timeout = seconds(cfg.drain?.timeout ?? '20s') ?? 20;
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    need(grace > delay + timeout, `terminationGracePeriodSeconds ${grace} must exceed drain.delay + drain.timeout (${delay + timeout}s)`);
    // TLS files: in a volume of this container (the deepest mount holding the path), which is
    // mounted as a directory so a renewed Secret arrives (the kubelet swaps ..data; a subPath
    // mount keeps the old files forever, and Bulwark would serve the old certificate).
    for (const f of tlsFilesOf(cfg)) {
      const holding = (c.volumeMounts || [])
        .filter((m) => f.path === m.mountPath || f.path.startsWith(m.mountPath.replace(/\/?$/, '/')))
        .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
      if (!holding) { report(`${at}: TLS file ${f.path} (${f.at}) is in no volumeMount of the container`); continue; }
      if (holding.subPath || holding.subPathExpr) {
        report(`${at}: volumeMount ${holding.name} holds TLS file ${f.path} (${f.at}) with subPath: a renewed certificate would never arrive (mount the Secret as a directory)`);
        continue;
      }
      const fvol = (spec.volumes || []).find((v) => v.name === holding.name);
      if (!fvol) continue;  // the schema walk reports a mount without its volume
      if (fvol.configMap) {
        if (f.kind === 'key') report(`${at}: TLS private key ${f.path} (${f.at}) comes from ConfigMap ${fvol.configMap.name}: keep keys in a Secret`);
        const keys = cmKeys.get(fvol.configMap.name);
        const rel = f.path.slice(holding.mountPath.replace(/\/?$/, '/').length);
        if (keys && !keys.has(rel)) report(`${at}: TLS file ${f.path} (${f.at}) is not in ConfigMap ${fvol.configMap.name} mounted at ${holding.mountPath} (a Secret volume not mounted?)`);
      }
    }
  }
}

// ---- main --------------------------------------------------------------------------------

if (configsOut) fs.mkdirSync(configsOut, { recursive: true });
for (const file of files) {
  const text = fs.readFileSync(file, 'utf8');
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  const parsed = [];
  docs.forEach((d, i) => {
    const label = `${file}: document ${i + 1}`;
    for (const e of d.errors) problems.push(`${label}: YAML: ${e.message.split('\n')[0]}`);
    if (d.errors.length) return;
    const doc = d.toJS();
    if (doc === null || doc === undefined) return;
    parsed.push([doc, label]);
  });
  const cmConfigs = new Map();
  const cmKeys = new Map();
  for (const [doc, label0] of parsed) {
    const label = `${label0} (${doc?.kind ?? '?'} ${doc?.metadata?.name ?? '?'})`;
    const report = (msg) => problems.push(`${label}: ${msg}`);
    if (kindOf(doc) !== 'object' || typeof doc.apiVersion !== 'string' || typeof doc.kind !== 'string') {
      report('not a Kubernetes object (apiVersion and kind are required)');
      continue;
    }
    checkedDocs++;
    const crd = crds[`${doc.apiVersion}/${doc.kind}`];
    if (crd) {
      walk(doc, crd, '', report);
    } else {
      if (!modelValidate(doc, report)) { report(`no schema for ${doc.apiVersion} ${doc.kind}`); continue; }
      const [, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : [null, doc.apiVersion];
      const clsName = version.charAt(0).toUpperCase() + version.slice(1) + doc.kind;
      if (!typeInfo(clsName)) { report(`no type map for ${clsName}`); continue; }
      walk(doc, clsName, '', report);
    }
    if (doc.kind === 'ConfigMap' && doc.apiVersion === 'v1') {
      cmKeys.set(doc.metadata?.name, new Set([...Object.keys(doc.data || {}), ...Object.keys(doc.binaryData || {})]));
      for (const [key, val] of Object.entries(doc.data || {})) {
        if (key !== 'bulwark.yaml' && !/^bulwark.*\.ya?ml$/.test(key)) continue;
        let cfg = {};
        try { cfg = YAML.parse(String(val)) || {}; } catch { /* bulwark --check reports it */ }
        cmConfigs.set(`${doc.metadata?.name}/${key}`, cfg);
        for (const f of tlsFilesOf(cfg)) tlsFileLines.add(`${f.kind} ${f.path}`);
        if (configsOut) {
          const out = path.join(configsOut, `${path.basename(file)}--${doc.metadata?.name}--${key}`);
          fs.writeFileSync(out, String(val));
          configs.push(out);
        }
      }
    }
  }
  for (const [doc, label0] of parsed) {
    const spec = kindOf(doc) === 'object' ? podSpecOf(doc) : null;
    if (!spec) continue;
    const label = `${label0} (${doc.kind} ${doc.metadata?.name ?? '?'})`;
    checkBulwarkPod(spec, cmConfigs, cmKeys, (msg) => problems.push(`${label}: ${msg}`));
  }
}
if (tlsFilesOut) fs.writeFileSync(tlsFilesOut, [...tlsFileLines].map((l) => `${l}\n`).join(''));

for (const p of problems) console.error(`INVALID ${p}`);
console.log(`validate_manifests: ${files.length} files, ${checkedDocs} objects, ${configs.length} Bulwark configs, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
