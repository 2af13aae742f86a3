// A chat room: messages, typing indicators and read receipts on `room:<id>`.
const $ = (id) => document.getElementById(id);
const TYPING_REPEAT_MS = 2000; // the server passes one typing:true per user and room per 2 s
const TYPING_IDLE_MS = 3000;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const timeOf = (createdAt) => new Date(typeof createdAt === "number" ? createdAt : Date.parse(createdAt)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

export function mountChat(client, me, room) {
  const list = $("messages");
  const typingLine = $("typing");
  const input = $("chat-input");
  const section = $("chat");
  $("chat-room").textContent = `room:${room}`;

  const shown = new Set(); // message ids on screen
  const readBy = new Map(); // user -> furthest message id read
  const typists = new Map(); // user -> timer that forgets them
  let newestId = 0;
  let lastRead = 0;

  const isNearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;

  function renderReceipts() {
    for (const item of list.querySelectorAll("li.message.mine")) {
      const id = Number(item.dataset.id);
      const readers = [...readBy].filter(([user, furthest]) => user !== me.user && furthest >= id).map(([user]) => user);
      const receipt = item.querySelector(".receipt");
      receipt.textContent = readers.length ? `✓✓ read by ${readers.join(", ")}` : "✓ sent";
      receipt.classList.toggle("read", readers.length > 0);
    }
  }

  function addMessage(m) {
    if (shown.has(m.id)) return;
    shown.add(m.id);
    const stick = isNearBottom();
    const item = el("li", `message${m.sender === me.user ? " mine" : ""}`);
    item.dataset.id = String(m.id);
    const head = el("div", "head");
    head.append(el("span", "sender", m.sender), el("time", "muted", timeOf(m.created_at)));
    item.append(head, el("div", "content", m.content));
    if (m.sender === me.user) item.append(el("div", "receipt muted", "✓ sent"));
    // Keep id order even when history arrives after a live message.
    const after = [...list.children].find((li) => li.dataset.id && Number(li.dataset.id) > m.id);
    list.insertBefore(item, after ?? null);
    newestId = Math.max(newestId, m.id);
    if (stick) list.scrollTop = list.scrollHeight;
    renderReceipts();
  }

  function systemLine(text) {
    const stick = isNearBottom();
    list.append(el("li", "system muted", text));
    if (stick) list.scrollTop = list.scrollHeight;
  }

  /** Sends a read receipt for the newest message of someone else, once visible. */
  function markRead() {
    if (document.visibilityState !== "visible" || newestId <= lastRead) return;
    const target = newestId;
    lastRead = target;
    client.read(room, target).catch(() => {
      lastRead = Math.min(lastRead, target - 1);
    });
  }

  function renderTyping() {
    const users = [...typists.keys()];
    typingLine.textContent = users.length === 0 ? "" : `${users.join(" and ")} ${users.length === 1 ? "is" : "are"} typing…`;
  }

  /** The room's last messages, read with the user's own token: a late joiner sees the conversation so far. */
  async function loadHistory() {
    try {
      const { messages } = await client.roomMessages(room, { limit: 30 });
      for (const m of messages.reverse()) addMessage(m);
      markRead();
    } catch {
      // offline or refused: live messages still arrive
    }
  }

  // Loaded once subscribed, so nothing published meanwhile falls between the page and the live
  // messages (a message in both shows once); after a gap, loaded again.
  let joined = false;
  const sub = client.subscribe(`room:${room}`);
  sub.on("subscribed", () => {
    section.dataset.state = "subscribed";
    if (joined) return;
    joined = true;
    void loadHistory();
  });
  sub.on("gap", () => void loadHistory());
  sub.on("error", (err) => {
    section.dataset.state = "refused";
    systemLine(`cannot join room:${room}: ${err.code}`);
  });
  sub.on("publication", (pub) => {
    const data = pub.data ?? {};
    switch (pub.event) {
      case "new_message":
        addMessage(data);
        if (data.sender !== me.user) markRead();
        if (typists.has(data.sender)) {
          clearTimeout(typists.get(data.sender));
          typists.delete(data.sender);
          renderTyping();
        }
        break;
      case "message_read":
        if (data.user !== me.user && (readBy.get(data.user) ?? 0) < data.message_id) {
          readBy.set(data.user, data.message_id);
          renderReceipts();
        }
        break;
      case "typing":
        if (data.user === me.user) break; // my own other tabs
        clearTimeout(typists.get(data.user));
        if (data.typing) typists.set(data.user, setTimeout(() => (typists.delete(data.user), renderTyping()), 7000));
        else typists.delete(data.user);
        renderTyping();
        break;
      case "user_joined":
        if (data.user !== me.user) systemLine(`${data.user} joined`);
        break;
      case "user_left":
        systemLine(`${data.user} left`);
        break;
    }
  });
  document.addEventListener("visibilitychange", markRead);

  let typingSentAt = 0;
  let idleTimer = 0;
  const stopTyping = () => {
    clearTimeout(idleTimer);
    if (typingSentAt === 0) return;
    typingSentAt = 0;
    client.typing(room, false).catch(() => {});
  };
  input.addEventListener("input", () => {
    if (input.value.trim() === "") return stopTyping();
    const now = Date.now();
    if (now - typingSentAt > TYPING_REPEAT_MS) {
      typingSentAt = now;
      client.typing(room, true).catch(() => {});
    }
    clearTimeout(idleTimer);
    idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  });
  input.addEventListener("blur", stopTyping);

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    input.value = "";
    stopTyping();
    try {
      addMessage(await client.sendMessage(room, content));
    } catch (err) {
      input.value = content;
      systemLine(`not sent: ${err.message ?? err}`);
    }
  });
}
