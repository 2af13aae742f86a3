// Reference 3: a Socket.IO pub/sub server (rooms), run with node. Clients emit
// "subscribe" (channel) and "publish" ({channel, event, data}); subscribers get "pub" ({channel, event, data}).
import http from "node:http";
import { Server } from "socket.io";

let publications = 0;
let deliveries = 0;

const server = http.createServer((req, res) => {
  if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ publications, deliveries, connections: io.engine.clientsCount }));
    return;
  }
  res.writeHead(404).end();
});
const io = new Server(server, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });

io.on("connection", (socket) => {
  socket.on("subscribe", (channel) => {
    socket.join(channel);
    socket.emit("reply", { channel, ok: true });
  });
  socket.on("publish", (msg) => {
    publications++;
    deliveries += io.sockets.adapter.rooms.get(msg.channel)?.size ?? 0;
    io.to(msg.channel).emit("pub", { channel: msg.channel, event: msg.event, data: msg.data });
  });
});

process.on("SIGTERM", () => process.exit(0));
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(JSON.stringify({ msg: "listening", port: server.address().port }));
});
