// One WebSocket frame per MQTT packet, as browsers send (shared by the benchmarks' node
// clients: fanout_clients.mjs and soak_clients.mjs).
//
// mqtt.js's stock Node transport wraps the socket in ws.createWebSocketStream, and
// mqtt-packet writes a packet in several chunks (fixed header, topic, payload), so each packet
// leaves as several frames (a PUBACK as three). packetPerFrame's stream takes mqtt-packet's
// corked chunks in one writev, cuts them at packet boundaries (the fixed header's remaining
// length) and sends each packet as one frame. Every frame is counted in ``counts``
// ({frames, whole}: frames sent, and those holding exactly one whole MQTT packet).

import { Duplex } from 'node:stream';

export function transport(WebSocket, counts) {
  // Split a buffer of whole MQTT packets (plus a possible tail) at packet boundaries.
  function* packets(state, chunk) {
    let buf = state.rest.length ? Buffer.concat([state.rest, chunk]) : chunk;
    for (;;) {
      let len = 0, mult = 1, i = 1;
      for (; i < buf.length && i < 5; i++) {
        len += (buf[i] & 0x7f) * mult;
        mult *= 128;
        if ((buf[i] & 0x80) === 0) break;
      }
      if (i >= buf.length || (buf[i] & 0x80) !== 0) break; // the header is not complete yet
      const end = i + 1 + len;
      if (end > buf.length) break;
      yield buf.subarray(0, end);
      buf = buf.subarray(end);
    }
    state.rest = buf;
  }

  // True when a frame holds exactly one whole MQTT packet.
  function wholePacket(data) {
    const split = { rest: Buffer.alloc(0) };
    const found = [...packets(split, Buffer.from(data))];
    return found.length === 1 && split.rest.length === 0;
  }

  function counted(socket) {
    const send = socket.send.bind(socket);
    socket.send = (data, ...rest) => {
      counts.frames += 1;
      if (wholePacket(data)) counts.whole += 1;
      return send(data, ...rest);
    };
    return socket;
  }

  // A stream builder for mqtt.MqttClient: one frame per MQTT packet.
  function packetPerFrame(url) {
    return () => {
      const socket = counted(new WebSocket(url, ['mqtt'], { perMessageDeflate: false }));
      const split = { rest: Buffer.alloc(0) };
      const waiting = [];
      const out = (buffers) => {
        for (const packet of packets(split, Buffer.concat(buffers))) {
          if (socket.readyState === WebSocket.OPEN) socket.send(packet);
          else waiting.push(packet);
        }
      };
      const stream = new Duplex({
        read() {},
        write(chunk, _enc, cb) { out([chunk]); cb(); },
        writev(chunks, cb) { out(chunks.map((c) => c.chunk)); cb(); },
        final(cb) { socket.close(); cb(); },
        destroy(err, cb) { socket.terminate(); cb(err); },
      });
      socket.on('open', () => { for (const p of waiting.splice(0)) socket.send(p); });
      socket.on('message', (data) => stream.push(data));
      socket.on('close', () => { stream.push(null); stream.destroy(); });
      socket.on('error', (err) => stream.destroy(err));
      return stream;
    };
  }

  return { counted, packetPerFrame };
}
