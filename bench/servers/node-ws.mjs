// Reference 2: a Node `ws` pub/sub server, written the way the ws README broadcasts
// (serialize once, send to each subscriber in a loop). Run with node. Frames as in bun-bare.ts.
import http from "node:http";
import { WebSocketServer, WebSocket } from "ws";

let publications = 0;
let deliveries = 0;
const channels = new Map(); // channel -> Set<WebSocket>

const server = http.createServer((req, res) => {
  if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ publications, deliveries, connections: wss.clients.size }));
    return;
  }
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, path: "/ws", perMessageDeflate: false });

wss.on("connection", (ws) => {
  const mine = new Set();
  ws.on("message", (raw) => {
    const frame = JSON.parse(raw.toString());
    if (frame.type === "subscribe") {
      let set = channels.get(frame.channel);
      if (!set) channels.set(frame.channel, (set = new Set()));
      set.add(ws);
      mine.add(frame.channel);
      ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true }));
    } else if (frame.type === "publish") {
      publications++;
      const out = Buffer.from(JSON.stringify({ type: "pub", channel: frame.channel, event: frame.event, data: frame.data }));
      for (const sub of channels.get(frame.channel) ?? []) {
        if (sub.readyState === WebSocket.OPEN) {
          sub.send(out, { binary: false });
          deliveries++;
        }
      }
    }
  });
  ws.on("close", () => {
    for (const channel of mine) channels.get(channel)?.delete(ws);
  });
});

process.on("SIGTERM", () => process.exit(0));
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(JSON.stringify({ msg: "listening", port: server.address().port }));
});
