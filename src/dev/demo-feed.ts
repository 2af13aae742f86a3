import { parseChannel, type Channel } from "../channel.ts";
import type { Logger } from "../log.ts";
import type { Publisher } from "../publisher.ts";

const RED = new Set([1, 3, 5, 7, 9, 12, 14, 16, 18, 19, 21, 23, 25, 27, 30, 32, 34, 36]);
const HISTORY = 20;
const TABLES = [
  { id: "demo-1", name: "Demo Roulette" },
  { id: "demo-2", name: "Demo Speed Roulette" },
];

const colorOf = (n: number) => (n === 0 ? "green" : RED.has(n) ? "red" : "black");

/**
 * Dev mode only: a random spin on `roulette:demo-1` and `roulette:demo-2` of tenant `demo` every
 * `intervalMs`, through the Publisher like any other publication, so the page at `/` moves with
 * no scraper running. The data has the scraper's shape (examples/scraper.py).
 */
export class DemoFeed {
  private timer: Timer | null = null;
  private readonly tables: { channel: Channel; id: string; name: string; numbers: number[] }[];

  constructor(
    private readonly publisher: Publisher,
    private readonly logger: Logger,
    private readonly intervalMs = 2000,
    private readonly random: () => number = Math.random,
  ) {
    this.tables = TABLES.map((t) => ({ ...t, channel: parseChannel("demo", `roulette:${t.id}`), numbers: [] }));
  }

  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.spinAll(), this.intervalMs);
    // prevents the demo from keeping a stopping process alive
    this.timer.unref();
    this.logger.info({ tenant: "demo", channels: this.tables.map((t) => t.channel.name), interval_ms: this.intervalMs }, "dev mode demo feed started");
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private spinAll(): void {
    for (const table of this.tables) {
      const number = Math.floor(this.random() * 37);
      table.numbers = [number, ...table.numbers].slice(0, HISTORY);
      const data = {
        roulette_id: table.id,
        roulette_name: table.name,
        number,
        color: colorOf(number),
        numbers: table.numbers,
        timestamp: Date.now(),
      };
      this.publisher.publish(table.channel, "roulette_update", data).catch((err) => this.logger.error({ err, channel: table.channel.name }, "demo spin failed"));
    }
  }
}
