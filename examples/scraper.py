#!/usr/bin/env python3
"""A simulated roulette scraper publishing to sinal, like the old scraper test script.

Every tick (``--rate`` ticks per second) a random roulette from a small set lands on a new number
(0-36, with its colour) and is sent as ``roulette_update`` through ``/emit-event`` (the scraper's
old shape; routed by the server to ``roulette:<roulette_id>``) or, with ``--mode publish``,
through ``/v1/publish``. A simple "colour streak" strategy follows every roulette; its updates
(``strategy_update`` with a ``signal``) are collected and sent in batches with
``publish_many`` every ``--batch-interval`` seconds, on ``strategy:<roulette_id>``.
It stops by itself after ``--duration`` seconds (or on Ctrl-C) and prints a summary.

    export SINAL_URL=http://localhost:3000 SINAL_API_KEY=sk_...
    python3 examples/scraper.py --rate 20 --duration 30

    # watch it: subscribe a WebSocket to roulette:1 / strategy:1 with a token from
    #   bun src/main.ts token --tenant <t> --user u1 --sub-channels 'roulette:*,strategy:*'

Standard library plus the client in clients/python (found automatically from this repository).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

try:
    from sinal_client import Publisher, SinalError
except ImportError:  # run from a checkout without installing the client
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))
    from sinal_client import Publisher, SinalError

RED = frozenset({1, 3, 5, 7, 9, 12, 14, 16, 18, 19, 21, 23, 25, 27, 30, 32, 34, 36})
NAMES = ["Immersive Roulette", "Lightning Roulette", "Brazilian Roulette", "Speed Roulette", "Auto Roulette", "VIP Roulette"]
HISTORY = 20  # numbers kept per roulette, newest first, sent with each update
STREAK = 3  # same colour this many times in a row triggers a bet on the other colour


def color_of(number: int) -> str:
    """The colour of a European roulette number."""
    if number == 0:
        return "green"
    return "red" if number in RED else "black"


class Roulette:
    """One table: its history and the state of its streak strategy."""

    def __init__(self, roulette_id: str, name: str) -> None:
        self.id = roulette_id
        self.name = name
        self.numbers: List[int] = []
        self.state = "waiting"  # waiting -> triggered -> (win|loss) -> waiting
        self.bet_on: Optional[str] = None
        self.wins = 0
        self.losses = 0

    def spin(self, rng: random.Random) -> Dict[str, Any]:
        number = rng.randint(0, 36)
        self.numbers.insert(0, number)
        del self.numbers[HISTORY:]
        return {
            "roulette_id": self.id,
            "roulette_name": self.name,
            "number": number,
            "color": color_of(number),
            "numbers": list(self.numbers),
            "timestamp": int(time.time() * 1000),
        }

    def strategy(self) -> Optional[Dict[str, Any]]:
        """The strategy's reaction to the latest number, or None when nothing changed."""
        latest = color_of(self.numbers[0])
        signal: Optional[str] = None
        if self.state == "triggered":
            won = latest == self.bet_on
            self.wins += won
            self.losses += not won
            self.state, signal = ("win" if won else "loss"), ("win" if won else "loss")
        elif len(self.numbers) >= STREAK:
            colours = {color_of(n) for n in self.numbers[:STREAK]}
            if len(colours) == 1 and latest != "green":
                self.bet_on = "black" if latest == "red" else "red"
                self.state, signal = "triggered", f"bet_{self.bet_on}"
        if signal is None:
            if self.state in ("win", "loss"):
                self.state = "waiting"
                signal = "waiting"
            else:
                return None
        return {
            "roulette_id": self.id,
            "strategy": "color_streak",
            "state": self.state,
            "signal": signal,
            "bet_on": self.bet_on if self.state == "triggered" else None,
            "trigger_numbers": self.numbers[:STREAK],
            "wins": self.wins,
            "losses": self.losses,
            "timestamp": int(time.time() * 1000),
        }


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("SINAL_URL", "http://localhost:3000"), help="sinal base URL (env SINAL_URL)")
    parser.add_argument("--api-key", default=os.environ.get("SINAL_API_KEY"), help="tenant API key (env SINAL_API_KEY)")
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SCRAPER_RATE", 5)), help="roulette numbers per second (env SCRAPER_RATE; default 5)")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("SCRAPER_DURATION", 30)), help="seconds to run (env SCRAPER_DURATION; default 30)")
    parser.add_argument("--roulettes", default=os.environ.get("SCRAPER_ROULETTES", "1,2,3,4,5"), help="comma-separated roulette ids (default 1,2,3,4,5)")
    parser.add_argument("--mode", choices=("emit", "publish"), default="emit", help="roulette numbers via /emit-event (default) or /v1/publish")
    parser.add_argument("--batch-interval", type=float, default=1.0, help="seconds between strategy batches (publish_many); default 1")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every publication")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an API key is required: --api-key or SINAL_API_KEY")
    if args.rate <= 0 or args.duration <= 0 or args.batch_interval <= 0:
        parser.error("--rate, --duration and --batch-interval must be positive")
    args.roulette_ids = [r.strip() for r in args.roulettes.split(",") if r.strip()]
    if not args.roulette_ids:
        parser.error("--roulettes names no roulette")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)
    tables = [Roulette(rid, NAMES[i % len(NAMES)]) for i, rid in enumerate(args.roulette_ids)]
    pending: List[Tuple[str, str, Dict[str, Any]]] = []
    spins = strategy_updates = errors = 0
    interval = 1.0 / args.rate
    started = time.monotonic()
    next_tick = started
    next_flush = started + args.batch_interval

    def flush() -> None:
        nonlocal strategy_updates, errors
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        try:
            answers = publisher.publish_many(batch)
            strategy_updates += len(answers)
            if args.verbose:
                for (channel, _, data), answer in zip(batch, answers):
                    print(f"{channel} strategy_update {data['signal']} -> offset {answer['offset']}")
        except SinalError as err:
            strategy_updates += len(err.published)
            errors += 1
            print(f"strategy batch failed: {err!r}", file=sys.stderr)

    with Publisher(args.url, args.api_key) as publisher:
        try:
            while True:
                now = time.monotonic()
                if now - started >= args.duration:
                    break
                if now >= next_flush:
                    next_flush += args.batch_interval
                    flush()
                    continue
                if now < next_tick:
                    time.sleep(min(next_tick, next_flush, started + args.duration) - now)
                    continue
                if next_tick < now - 1.0:
                    next_tick = now  # fell more than a second behind (a slow server): do not burst
                next_tick += interval
                table = rng.choice(tables)
                data = table.spin(rng)
                try:
                    if args.mode == "emit":
                        answer = publisher.emit_event("roulette_update", data)
                    else:
                        answer = publisher.publish(f"roulette:{table.id}", "roulette_update", data)
                    spins += 1
                    if args.verbose:
                        print(f"roulette:{table.id} {data['number']:>2} {data['color']:<5} -> offset {answer['offset']}")
                except SinalError as err:
                    errors += 1
                    print(f"roulette update failed: {err!r}", file=sys.stderr)
                update = table.strategy()
                if update is not None:
                    pending.append((f"strategy:{table.id}", "strategy_update", update))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        flush()

    elapsed = time.monotonic() - started
    print(
        f"{spins} roulette updates, {strategy_updates} strategy updates, {errors} errors "
        f"in {elapsed:.1f}s ({spins / elapsed:.1f} numbers/s) to {args.url}"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
