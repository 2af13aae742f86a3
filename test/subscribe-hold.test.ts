import { expect, test } from "bun:test";
import { ChannelHistory, type MessageHistoryStore } from "../src/history/channel-history.ts";
import { oneSocket } from "./support/one-socket.ts";
import { Namespaces, parseNamespaces } from "../src/namespaces.ts";
import type { Deliver, FrameBuilder, Position, Recovery, Retention } from "../src/history/history.ts";
import { MemoryHistory } from "../src/history/memory-history.ts";
import { Metrics } from "../src/metrics.ts";
import { Publisher } from "../src/publisher.ts";
import { Connection } from "../src/ws/connection.ts";
import { FrameHandlers, type ChannelAccess } from "../src/ws/handlers.ts";
import { Listeners } from "../src/ws/hooks.ts";
import { parseChannel } from "../src/channel.ts";
import { RoomAccess } from "../src/chat/room-access.ts";
import { RoomMembers } from "../src/chat/room-members.ts";

// The subscribe path with a history that answers asynchronously (as a Redis or PostgreSQL one
// will, and the sqlite one does through its Promise interface) and slowly: reads are resolved by
// the test, so live publications can land while a subscribe waits for its history.

/** A memory history whose reads wait until the test releases them. */
class SlowHistory implements MessageHistoryStore {
  readonly inner = new MemoryHistory();
  readonly waiting: (() => void)[] = [];
  append(topic: string, build: FrameBuilder, retention: Retention, deliver: Deliver) {
    return this.inner.append(topic, build, retention, deliver);
  }
  position(topic: string): Promise<Position> {
    const answer = this.inner.position(topic);
    return new Promise((resolve) => this.waiting.push(() => resolve(answer)));
  }
  recover(topic: string, since: Position, retention: Retention, maxBytes: number): Promise<Recovery> {
    const answer = this.inner.recover(topic, since, retention, maxBytes);
    return new Promise((resolve) => this.waiting.push(() => resolve(answer)));
  }
  page(topic: string, epoch: string, after: number, upTo: number, retention: Retention, maxBytes: number) {
    return this.inner.page(topic, epoch, after, upTo, retention, maxBytes);
  }
  reset(topic: string) {
    return this.inner.reset(topic);
  }
  appendMessage(): never {
    throw new Error("no chat messages in this test");
  }
  trim(): void {}
  async close(): Promise<void> {}
}

const KEEP = { size: 100, ttlMs: 3_600_000 };
// Every namespace keeps 100 publications for an hour here.
const namespaces = new Namespaces(parseNamespaces({}).map((ns) => ({ ...ns, history: KEEP })));

function setup(budget = 1 << 20, access?: ChannelAccess) {
  const slow = new SlowHistory();
  const { ws, sent, broker, hub } = oneSocket();
  const overflowed: string[] = [];
  const metrics = new Metrics(10);
  const publisher = new Publisher(new ChannelHistory(new MemoryHistory(), slow, namespaces), broker, metrics);
  const conn = new Connection("c1", { user: "u1", tenant: "acme", expiresAt: Date.now() / 1000 + 600, subChannels: ["*"], pubChannels: ["*"], roles: [] }, {} as never, 100, 0);
  conn.ws = ws;
  const handlers = new FrameHandlers(
    {
      respond: {
        reply: (_c, id, fields) => void sent.push(JSON.stringify({ type: "reply", id, ok: true, ...fields })),
        sendFrames: (_c, frames) => void sent.push(...frames),
        budget: () => budget,
        overflow: () => void overflowed.push(conn.id),
        replay: () => {
          throw new Error("no paged replay in this test");
        },
      },
      verifier: {} as never,
      publisher,
      hub,
      metrics,
      namespaces,
      listeners: new Listeners([], () => undefined),
      maxSubscriptions: 10,
      subscribeExtras: [],
      access,
    },
    {},
  );
  const room = parseChannel("acme", "room:1");
  const frames = () => sent.map((f) => JSON.parse(f) as Record<string, any>).map((f) => (f.type === "reply" ? `reply ${f.id} @${f.offset}` : `pub ${f.offset}`));
  return { slow, handlers, conn, publisher, room, frames, overflowed };
}

test("live publications during a slow history read come after the reply and the replay, once each", async () => {
  const { slow, handlers, conn, publisher, room, frames } = setup();
  const first = await publisher.publish(room, "e", 1);
  await publisher.publish(room, "e", 2);
  const answered = handlers.handle(conn, { type: "subscribe", id: 1, channel: "room:1", since: first });
  // The read took its answer (offset 2); these land while it waits.
  await publisher.publish(room, "e", 3);
  await publisher.publish(room, "e", 4);
  expect(frames()).toEqual([]);
  slow.waiting.shift()!();
  await answered;
  await publisher.publish(room, "e", 5);
  expect(frames()).toEqual(["reply 1 @2", "pub 2", "pub 3", "pub 4", "pub 5"]);
});

test("a second subscribe waits for the read in flight; as a repeat of a held channel it replays nothing", async () => {
  const { slow, handlers, conn, publisher, room, frames } = setup();
  await publisher.publish(room, "e", 1);
  const one = handlers.handle(conn, { type: "subscribe", id: 1, channel: "room:1" });
  const two = handlers.handle(conn, { type: "subscribe", id: 2, channel: "room:1", since: { epoch: (await slow.inner.position("acme/room:1")).epoch, offset: 0 } });
  await publisher.publish(room, "e", 2);
  // Only the first read has started; the second waits for the first's answer.
  expect(slow.waiting).toHaveLength(1);
  slow.waiting.shift()!();
  await one;
  await Bun.sleep(0);
  // The repeat only reads the position: live frames keep flowing meanwhile.
  await publisher.publish(room, "e", 3);
  expect(slow.waiting).toHaveLength(1);
  slow.waiting.shift()!();
  await two;
  await publisher.publish(room, "e", 4);
  // Every publication since the first subscribe was sent on this connection, in order: offsets
  // 1 and 2 are never sent again, whatever `since` the repeat names.
  expect(frames()).toEqual(["reply 1 @1", "pub 2", "pub 3", "reply 2 @2", "pub 4"]);
  expect(conn.holding?.size ?? 0).toBe(0);
});

test("one history read per connection at a time: a subscribe to another channel waits for the read in flight", async () => {
  const { slow, handlers, conn, publisher, room, frames } = setup();
  const other = parseChannel("acme", "room:2");
  await publisher.publish(room, "e", 1);
  await publisher.publish(other, "e", 1);
  const one = handlers.handle(conn, { type: "subscribe", id: 1, channel: "room:1" });
  const two = handlers.handle(conn, { type: "subscribe", id: 2, channel: "room:2" });
  expect(slow.waiting).toHaveLength(1);
  slow.waiting.shift()!();
  await one;
  await Bun.sleep(0);
  expect(slow.waiting).toHaveLength(1);
  slow.waiting.shift()!();
  await two;
  expect(frames()).toEqual(["reply 1 @1", "reply 2 @1"]);
});

test("frames held during a read past the connection's budget close it instead of piling up", async () => {
  const { slow, handlers, conn, publisher, room, frames, overflowed } = setup(600);
  await publisher.publish(room, "e", 1);
  const answered = handlers.handle(conn, { type: "subscribe", id: 1, channel: "room:1" });
  for (let i = 0; i < 20; i++) await publisher.publish(room, "e", "x".repeat(50));
  slow.waiting.shift()!();
  await answered;
  expect(overflowed).toEqual(["c1"]);
  expect(frames()).toEqual([]);
});

test("an unsubscribe sent while a subscribe waits for the room's members ends unsubscribed", async () => {
  // Room members from a store that answers when the test says (a shared store over the network).
  const reads: (() => void)[] = [];
  const members = new RoomMembers({ members: () => new Promise<string[]>((resolve) => reads.push(() => resolve([]))) });
  const { slow, handlers, conn, publisher, room, frames } = setup(1 << 20, new RoomAccess(members, namespaces));
  const subscribed = handlers.handle(conn, { type: "subscribe", id: 1, channel: "room:1" });
  const unsubscribed = handlers.handle(conn, { type: "unsubscribe", id: 2, channel: "room:1" });
  reads.shift()!();
  await Bun.sleep(0);
  slow.waiting.shift()!();
  await subscribed;
  expect(await unsubscribed).toEqual({ channel: "room:1" });
  expect(conn.topics).not.toContain(room.topic);
  await publisher.publish(room, "e", 1);
  expect(frames()).toEqual(["reply 1 @0"]);
  expect(conn.admitting?.size ?? 0).toBe(0);
});
