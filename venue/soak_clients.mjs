// `plaza soak`'s screens: N browser-like mqtt.js clients in one node process, over MQTT 5 on
// WebSocket with one frame per packet (ws_transport.mjs), each as the web client connects
// (api/web/js/realtime.js): a persistent session (clean false, a session expiry, the same
// client id on every attempt), the board subscribed with QoS 1 on every connect, and
// reconnects as the web client: a cap of 0.5 s x 2^attempt up to 15 s, and jitter (a wait
// in [cap/2, cap]; `--jitter off`: exactly the cap, every client at the same instants). A
// reconnect to a session the broker kept, having heard from the broker within the last 60 s,
// subscribes with retain handling 1 (the queued changes, not the whole retained board
// again); the first connect and longer silences use retain handling 0, as the web client
// does (it also resyncs after being degraded, which these screens never are). Driven by
// venue/soak.py over stdin/stdout, one JSON object per line.
//
// stdin:  {"cmd":"count"}   how many are connected now
//         {"cmd":"stop"}
// stdout: {"event":"ready","clients":N,"connect_ms":T}   every client connected and holding
//                                                         a board entry for --devices machines
//         {"event":"count","live":L,"connects":C,"full_boards":F}   (so far)
//         {"event":"done"}                                the report file is written
//
// The report (--report, JSON):
//   keys:   {"device:version": clients}   board versions received, counted once per client:
//           a client counts a version only when it is newer than the one it holds for that
//           machine (the bridge's versions only grow), so a retained copy sent again on a
//           reconnect, or a QoS 1 redelivery, is not counted twice (they are in `repeats`)
//   probes: {"device:version": [ms...]}    arrival times (epoch ms) for the --probes machines
//   downs:  [[client, from_ms, to_ms], ...] times a client was disconnected after its first
//           connect (to_ms null: still down at the end)
//   up_from: first connect per client (epoch ms); connects; full_boards (subscribes with
//   retain handling 0); repeats; cpu_ms; frames; whole

import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';

import { transport } from './ws_transport.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    clients: { type: 'string', default: '10' },
    prefix: { type: 'string', default: 'soak' },
    root: { type: 'string', default: 'plaza' },
    web: { type: 'string' }, // the web client's package.json: mqtt.js and ws come from there
    devices: { type: 'string', default: '0' }, // board entries each client must hold for ready
    probes: { type: 'string', default: '' }, // comma list of machines whose arrivals are timed
    report: { type: 'string' },
    jitter: { type: 'string', default: 'on' }, // off: every client waits exactly the cap
    'connect-pace': { type: 'string', default: '10' }, // clients per 50 ms (listen backlog 100)
  },
});

const require = createRequire(opt.web);
const mqtt = require('mqtt');
const WebSocket = require('ws');

const now = () => performance.timeOrigin + performance.now();
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const counts = { frames: 0, whole: 0 };
const { packetPerFrame } = transport(WebSocket, counts);

const boardTopic = `${opt.root}/board/#`;
const boardPrefix = `${opt.root}/board/`;
const probes = new Set(opt.probes.split(',').filter(Boolean));
const keys = new Map();
const probeTimes = new Map();
const downs = [];
let connects = 0;
let repeats = 0;
let stopping = false;

function onBoard(c, payload) {
  const entry = JSON.parse(payload);
  const device = entry.device_id;
  const held = c.versions.get(device);
  if (held !== undefined && entry.version <= held) {
    repeats += 1;
    return;
  }
  c.versions.set(device, entry.version);
  const key = `${device}:${entry.version}`;
  keys.set(key, (keys.get(key) || 0) + 1);
  if (probes.has(device)) {
    let times = probeTimes.get(key);
    if (!times) probeTimes.set(key, (times = []));
    times.push(now());
  }
}

// One attempt: resolves when the connection ends (or never came up).
function connectOnce(c) {
  return new Promise((resolve) => {
    const client = new mqtt.MqttClient(packetPerFrame(opt.url), {
      username: opt.username,
      password: opt.password,
      clientId: c.id,
      protocolVersion: 5,
      clean: false,
      keepalive: 30,
      reconnectPeriod: 0,
      connectTimeout: 8000,
      resubscribe: false,
      properties: { sessionExpiryInterval: 900 },
    });
    c.client = client;
    let live = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      client.removeAllListeners();
      client.on('error', () => {});
      client.end(true);
      resolve(live);
    };
    client.on('connect', (connack) => {
      const quiet = now() - c.lastHeard;
      const rh = connack.sessionPresent && c.upFrom !== null && quiet < 60000 ? 1 : 0;
      client.subscribe({ [boardTopic]: { qos: 1, rh } }, (err) => {
        if (err) return finish();
        if (rh === 0) c.fullBoards += 1;
        live = true;
        connects += 1;
        const t = now();
        if (c.upFrom === null) c.upFrom = t;
        if (c.downSince !== null) downs.push([c.index, c.downSince, t]);
        c.downSince = null;
        c.live = true;
      });
    });
    client.on('packetreceive', () => { c.lastHeard = now(); });
    client.on('message', (topic, payload) => {
      if (topic.startsWith(boardPrefix) && payload.length) onBoard(c, payload);
    });
    client.on('error', () => {});
    client.on('close', () => {
      if (c.live && !stopping) c.downSince = now();
      c.live = false;
      finish();
    });
    client.on('end', finish);
  });
}

async function run(c) {
  let attempt = 0;
  while (!stopping) {
    if (await connectOnce(c)) attempt = 0;
    if (stopping) return;
    attempt += 1;
    const cap = Math.min(15, 0.5 * 2 ** attempt);
    const wait = opt.jitter === 'off' ? cap : cap / 2 + Math.random() * (cap / 2);
    await new Promise((r) => setTimeout(r, wait * 1000));
  }
}

const n = Number(opt.clients);
const clients = [];
const started = now();
const pace = Number(opt['connect-pace']);
for (let i = 0; i < n; i++) {
  const c = {
    index: i, id: `${opt.prefix}-${i}`, versions: new Map(), client: null,
    live: false, upFrom: null, downSince: null, fullBoards: 0, lastHeard: 0,
  };
  clients.push(c);
  c.running = run(c);
  if (i % pace === pace - 1) await new Promise((r) => setTimeout(r, 50));
}
const want = Number(opt.devices);
for (;;) {
  if (clients.every((c) => c.live && c.versions.size >= want)) break;
  await new Promise((r) => setTimeout(r, 50));
}
say({ event: 'ready', clients: n, connect_ms: now() - started });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { cmd } = JSON.parse(line);
  if (cmd === 'count') {
    const fullBoards = clients.reduce((k, c) => k + c.fullBoards, 0);
    say({ event: 'count', live: clients.filter((c) => c.live).length, connects, full_boards: fullBoards });
  }
  if (cmd !== 'stop') continue;
  stopping = true;
  const end = now();
  for (const c of clients) if (c.downSince !== null) downs.push([c.index, c.downSince, null]);
  const usage = process.cpuUsage();
  writeFileSync(opt.report, JSON.stringify({
    keys: Object.fromEntries(keys),
    probes: Object.fromEntries(probeTimes),
    downs,
    up_from: clients.map((c) => c.upFrom),
    end_ms: end,
    connects,
    full_boards: clients.reduce((n, c) => n + c.fullBoards, 0),
    repeats,
    cpu_ms: (usage.user + usage.system) / 1000,
    ...counts,
  }));
  say({ event: 'done' });
  for (const c of clients) if (c.client) c.client.end(true);
  break;
}
process.exit(0);
