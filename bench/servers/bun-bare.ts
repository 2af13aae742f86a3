/**
 * Reference 1: a bare Bun.serve pub/sub server (no auth, no tenants, no offsets, no limits).
 * Same client frames as sinal: {"type":"subscribe","id","channel"} and {"type":"publish","channel","event","data"};
 * subscribers get {"type":"pub","channel","event","data"}. GET /stats counts deliveries server-side.
 */
let publications = 0;
let deliveries = 0;
let connections = 0;

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 0),
  fetch(req, server) {
    if (new URL(req.url).pathname === "/stats") return Response.json({ publications, deliveries, connections });
    if (server.upgrade(req, { data: undefined })) return undefined;
    return new Response("expected a WebSocket upgrade", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    open() {
      connections++;
    },
    close() {
      connections--;
    },
    message(ws, message) {
      const frame = JSON.parse(String(message));
      if (frame.type === "subscribe") {
        ws.subscribe(frame.channel);
        ws.send(JSON.stringify({ type: "reply", id: frame.id, ok: true }));
      } else if (frame.type === "publish") {
        publications++;
        deliveries += server.subscriberCount(frame.channel);
        server.publish(frame.channel, JSON.stringify({ type: "pub", channel: frame.channel, event: frame.event, data: frame.data }));
      }
    },
  },
});
process.on("SIGTERM", () => process.exit(0));
console.log(JSON.stringify({ msg: "listening", port: server.port }));
