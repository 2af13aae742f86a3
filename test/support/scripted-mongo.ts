import mock from "mongodb-mock-server";
import { Long, Timestamp, type Document } from "mongodb";

/**
 * A scripted MongoDB wire server (mongodb-mock-server) for the faults the emulator cannot
 * produce: lost history, fatal change-stream errors, invalidate events. It serves one collection:
 * `find` answers `docs`; each `aggregate` ($changeStream) opens a cursor, recorded in
 * `changeStreams`; each `getMore` answers the next scripted step, or an empty batch after 20 ms
 * (as MongoDB's awaitData would) when the script is empty.
 */

type Step = { batch: Document[] } | { error: { code: number; codeName: string; errmsg?: string } };

const HELLO = {
  ismaster: true,
  // Makes the driver speak OP_QUERY, the only protocol mongodb-mock-server parses.
  __nodejs_mock_server__: true,
  maxWireVersion: 8,
  minWireVersion: 0,
  maxBsonObjectSize: 16 * 1024 * 1024,
  maxMessageSizeBytes: 48_000_000,
  maxWriteBatchSize: 1000,
  ok: 1,
};

interface MockRequest {
  document: Document;
  reply(doc: Document): void;
}

interface MockServer {
  port: number;
  setMessageHandler(handler: (request: MockRequest) => void): void;
  destroy(): Promise<void>;
}

export class ScriptedMongo {
  /** What `find` answers: the collection's current documents. */
  docs: Document[] = [];
  /** The $changeStream stage of every aggregate received, in order. */
  readonly changeStreams: Document[] = [];
  /** Errors the next aggregates answer with, in order (then they succeed). */
  readonly aggregateErrors: Step[] = [];
  private readonly script: Step[] = [];
  private nextCursor = 100;
  private clock = 1;

  private constructor(
    private readonly server: MockServer,
    private readonly ns: string,
  ) {
    server.setMessageHandler((request) => this.handle(request));
  }

  static async start(db: string, collection: string): Promise<ScriptedMongo> {
    const server = (await mock.createServer(0, "127.0.0.1")) as MockServer;
    return new ScriptedMongo(server, `${db}.${collection}`);
  }

  uri(): string {
    return `mongodb://127.0.0.1:${this.server.port}/?directConnection=true&serverSelectionTimeoutMS=1000`;
  }

  /** Queues getMore answers (not named `then`: that would make the server a thenable). */
  answer(...steps: Step[]): this {
    this.script.push(...steps);
    return this;
  }

  /** A change event with resume token `token`. */
  change(token: string, operationType: string, doc: Document | null, key?: unknown): Document {
    const event: Document = { _id: { _data: token }, operationType, clusterTime: new Timestamp({ t: Math.floor(Date.now() / 1000), i: this.clock++ }) };
    if (doc !== null) event.fullDocument = doc;
    if (doc !== null || key !== undefined) event.documentKey = { _id: key ?? doc!._id };
    return event;
  }

  get pending(): number {
    return this.script.length;
  }

  async stop(): Promise<void> {
    await this.server.destroy();
  }

  private handle(request: MockRequest): void {
    const doc = request.document;
    const command = Object.keys(doc)[0];
    switch (command) {
      case "ismaster":
      case "isMaster":
      case "hello":
        return request.reply({ ...HELLO, localTime: new Date() });
      case "aggregate": {
        this.changeStreams.push((doc.pipeline as Document[])[0]!.$changeStream as Document);
        const failure = this.aggregateErrors.shift();
        if (failure !== undefined && "error" in failure) return request.reply({ ok: 0, errmsg: failure.error.codeName, ...failure.error });
        return request.reply({ cursor: { id: Long.fromNumber(this.nextCursor++), ns: this.ns, firstBatch: [] }, ok: 1 });
      }
      case "find":
        return request.reply({ cursor: { id: Long.fromNumber(0), ns: this.ns, firstBatch: this.docs }, ok: 1 });
      case "getMore": {
        const step = this.script.shift();
        // Cursor ids must go back as int64 (the mock decodes the request's id to a number).
        const id = Long.fromNumber(Number(doc.getMore));
        if (step === undefined) {
          setTimeout(() => request.reply({ cursor: { id, ns: this.ns, nextBatch: [] }, ok: 1 }), 20);
          return;
        }
        if ("error" in step) return request.reply({ ok: 0, errmsg: step.error.codeName, ...step.error });
        return request.reply({ cursor: { id, ns: this.ns, nextBatch: step.batch }, ok: 1 });
      }
      default:
        return request.reply({ ok: 1 });
    }
  }
}
