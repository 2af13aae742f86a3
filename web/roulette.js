// Roulette boards: one subscription per `roulette:<id>`, the latest number big, the last 20 as chips.
const RED = new Set([1, 3, 5, 7, 9, 12, 14, 16, 18, 19, 21, 23, 25, 27, 30, 32, 34, 36]);
const HISTORY = 20;

export const colorOf = (n) => (n === 0 ? "green" : RED.has(n) ? "red" : "black");

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function chip(number, big = false) {
  const node = el("span", `chip ${colorOf(number)}${big ? " big" : ""}`, String(number));
  node.dataset.number = String(number);
  return node;
}

/** The numbers a `roulette_update` (scraper or feed document) carries, newest first. */
function numbersOf(data, previous) {
  if (data && Array.isArray(data.numbers)) return data.numbers.filter(Number.isInteger).slice(0, HISTORY);
  if (data && Number.isInteger(data.number)) return [data.number, ...previous].slice(0, HISTORY);
  if (data && typeof data.number === "string" && /^\d+$/.test(data.number)) return [Number(data.number), ...previous].slice(0, HISTORY);
  return previous;
}

function board(client, id) {
  const root = el("article", "board");
  root.dataset.roulette = id;
  root.dataset.state = "subscribing";
  const head = el("header");
  const title = el("h3", "", id);
  const status = el("span", "muted status", "subscribing…");
  head.append(title, status);
  const last = el("div", "last-number", "–");
  const chips = el("div", "numbers");
  const meta = el("div", "meta muted", "waiting for a spin");
  root.append(head, last, chips, meta);

  let numbers = [];
  let spins = 0;
  const render = (data, ts) => {
    numbers = numbersOf(data, numbers);
    if (data && typeof data.roulette_name === "string") title.textContent = `${data.roulette_name} · ${id}`;
    last.replaceChildren(...(numbers.length ? [chip(numbers[0], true)] : []));
    if (!numbers.length) last.textContent = "–";
    last.dataset.number = numbers.length ? String(numbers[0]) : "";
    chips.replaceChildren(...numbers.slice(1).map((n) => chip(n)));
    if (ts) meta.textContent = `${spins} update${spins === 1 ? "" : "s"} · last at ${new Date(ts).toLocaleTimeString()}`;
    root.classList.remove("flash");
    void root.offsetWidth; // restarts the highlight animation
    root.classList.add("flash");
  };

  const sub = client.subscribe(`roulette:${id}`);
  sub.on("subscribed", (reply) => {
    root.dataset.state = "subscribed";
    status.textContent = "live";
    // A channel fed from MongoDB answers with the document as of the reply's offset.
    if (reply.snapshot) render(reply.snapshot, null);
  });
  sub.on("publication", (pub) => {
    if (pub.event === "roulette_deleted") {
      numbers = [];
      render(null, pub.ts);
      meta.textContent = "removed";
      return;
    }
    if (pub.event !== "roulette_update") return;
    spins++;
    render(pub.data, pub.ts);
  });
  sub.on("gap", () => {
    status.textContent = "reloading…";
  });
  sub.on("recovered", () => {
    status.textContent = "live";
  });
  sub.on("error", (err) => {
    root.dataset.state = "refused";
    status.textContent = `refused: ${err.code}`;
  });
  return root;
}

export function mountRoulettes(client, { boards, form, input }, ids) {
  const watched = new Set();
  const add = (id) => {
    if (!/^[A-Za-z0-9_.@-]{1,128}$/.test(id) || watched.has(id)) return;
    watched.add(id);
    boards.append(board(client, id));
  };
  ids.forEach(add);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    add(input.value.trim());
    input.value = "";
  });
}
