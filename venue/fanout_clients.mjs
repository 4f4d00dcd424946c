// `plaza bench fanout`'s subscribers: N browser-like mqtt.js clients in one node process,
// over MQTT 5 on WebSocket, each subscribed (QoS 1) to the board and to one machine's raw
// state topic. Driven by venue/bench_fanout.py over stdin/stdout, one JSON object per line.
//
// One WebSocket frame per MQTT packet, as browsers send: mqtt.js's stock Node transport wraps
// the socket in ws.createWebSocketStream, and mqtt-packet writes a packet in several chunks
// (fixed header, topic, payload), so each packet leaves as several frames (a PUBACK as three).
// Here the stream takes mqtt-packet's corked chunks in one writev, cuts them at packet
// boundaries (the fixed header's remaining length) and sends each packet as one frame.
// `--transport stock` keeps mqtt.js's own, to show the difference. Every frame is counted.
//
// stdin:  {"cmd":"arm","k":K,"state":"in_use","seq":Q}   expect change K
//         {"cmd":"stop"}
// stdout: {"event":"ready","clients":N,"boards":B,"connect_ms":T}
//         {"event":"armed","k":K}
//         {"event":"change","k":K,"raw":[ms...],"board":[ms...]}   arrival times (epoch ms)
//         {"event":"stats","frames":F,"whole":W,"packets":P,"disconnects":D,"cpu_ms":C}
//         (W: frames that hold exactly one whole MQTT packet; P: packets mqtt.js wrote)

import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';

import { transport } from './ws_transport.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    clients: { type: 'string', default: '10' },
    prefix: { type: 'string', default: 'fan' },
    device: { type: 'string' },
    root: { type: 'string', default: 'plaza' },
    web: { type: 'string' }, // the web client's package.json: mqtt.js and ws come from there
    transport: { type: 'string', default: 'packet' },
    'change-timeout': { type: 'string', default: '10000' },
    'connect-pace': { type: 'string', default: '10' }, // clients per 50 ms (listen backlog 100)
  },
});

const require = createRequire(opt.web);
const mqtt = require('mqtt');
const WebSocket = require('ws');

const now = () => performance.timeOrigin + performance.now();
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const counts = { frames: 0, whole: 0, packets: 0, disconnects: 0 };

const { counted, packetPerFrame } = transport(WebSocket, counts);

const boardTopic = `${opt.root}/board/${opt.device}`;
const rawTopic = `${opt.root}/devices/${opt.device}/state`;
const n = Number(opt.clients);
const clients = [];
let armed = null; // {k, state, seq, raw: [], board: [], timer}

function finish() {
  if (!armed) return;
  clearTimeout(armed.timer);
  say({ event: 'change', k: armed.k, raw: armed.raw, board: armed.board });
  armed = null;
}

function onMessage(c, topic, payload) {
  if (topic === rawTopic) {
    const msg = JSON.parse(payload);
    if (armed && msg.seq === armed.seq && !c.gotRaw) {
      c.gotRaw = true;
      armed.raw.push(now());
    }
  } else if (topic.startsWith(`${opt.root}/board/`)) {
    const entry = JSON.parse(payload);
    c.boards.add(entry.device_id);
    if (topic === boardTopic && armed && entry.state === armed.state && !c.gotBoard) {
      c.gotBoard = true;
      armed.board.push(now());
    }
  }
  if (armed && armed.raw.length === n && armed.board.length === n) finish();
}

function connectOne(i) {
  return new Promise((resolve, reject) => {
    const options = {
      username: opt.username,
      password: opt.password,
      clientId: `${opt.prefix}-${i}`,
      protocolVersion: 5,
      clean: true,
      keepalive: 60,
      reconnectPeriod: 0,
      connectTimeout: 30000,
    };
    const client = opt.transport === 'stock'
      ? mqtt.connect(opt.url, {
        ...options,
        createWebsocket: (url, protocols, o) => counted(new WebSocket(url, protocols, o.wsOptions)),
      })
      : new mqtt.MqttClient(packetPerFrame(opt.url), options);
    const c = { client, boards: new Set(), gotRaw: false, gotBoard: false };
    // the CONNECT is written inside the constructor, before this listener exists
    counts.packets += 1;
    client.on('packetsend', () => { counts.packets += 1; });
    client.on('message', (topic, payload) => onMessage(c, topic, payload));
    client.on('close', () => { if (c.ready) counts.disconnects += 1; });
    client.once('error', reject);
    client.once('connect', () => {
      client.subscribe([`${opt.root}/board/+`, rawTopic], { qos: 1 }, (err) => {
        if (err) return reject(err);
        c.ready = true;
        resolve(c);
      });
    });
  });
}

const started = now();
const pace = Number(opt['connect-pace']);
const pending = [];
for (let i = 0; i < n; i++) {
  pending.push(connectOne(i));
  if (i % pace === pace - 1) await new Promise((r) => setTimeout(r, 50));
}
clients.push(...(await Promise.all(pending)));
// the retained board reaches every client before the first change
for (let waited = 0; waited < 10000; waited += 20) {
  if (clients.every((c) => c.boards.has(opt.device))) break;
  await new Promise((r) => setTimeout(r, 20));
}
say({
  event: 'ready',
  clients: clients.length,
  boards: Math.min(...clients.map((c) => c.boards.size)),
  connect_ms: now() - started,
});

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const msg = JSON.parse(line);
  if (msg.cmd === 'arm') {
    for (const c of clients) { c.gotRaw = false; c.gotBoard = false; }
    armed = { k: msg.k, state: msg.state, seq: msg.seq, raw: [], board: [] };
    armed.timer = setTimeout(finish, Number(opt['change-timeout']));
    say({ event: 'armed', k: msg.k });
  } else if (msg.cmd === 'stop') {
    const usage = process.cpuUsage();
    say({ event: 'stats', ...counts, cpu_ms: (usage.user + usage.system) / 1000 });
    await Promise.all(clients.map((c) => new Promise((r) => c.client.end(false, {}, r))));
    break;
  }
}
process.exit(0);
