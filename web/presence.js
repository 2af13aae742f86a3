// Who is online: the `presence` subscribe reply lists everyone, then `presence` events change it.
const $ = (id) => document.getElementById(id);

export function mountPresence(client, me) {
  const list = $("online");
  const people = new Map(); // user -> {user, name?, status}

  function render() {
    const sorted = [...people.values()].sort((a, b) => (a.user === me.user ? -1 : b.user === me.user ? 1 : a.user.localeCompare(b.user)));
    list.replaceChildren(
      ...sorted.map((p) => {
        const item = document.createElement("li");
        item.dataset.user = p.user;
        item.dataset.status = p.status;
        const dot = document.createElement("span");
        dot.className = `dot ${p.status}`;
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = p.name && p.name !== p.user ? `${p.name} (${p.user})` : p.user;
        const status = document.createElement("span");
        status.className = "muted";
        status.textContent = p.user === me.user ? `${p.status} · you` : p.status;
        item.append(dot, name, status);
        return item;
      }),
    );
    $("online-count").textContent = String(people.size);
  }

  const sub = client.subscribe("presence");
  sub.on("subscribed", (reply) => {
    people.clear();
    for (const p of reply.presence ?? []) if (p.status !== "offline") people.set(p.user, p);
    render();
  });
  sub.on("publication", (pub) => {
    if (pub.event !== "presence" || !pub.data) return;
    const p = pub.data;
    if (p.status === "offline") people.delete(p.user);
    else people.set(p.user, { ...people.get(p.user), ...p });
    render();
  });

  $("my-status").addEventListener("change", (event) => {
    client.setPresence(event.target.value).catch(() => {});
  });
}
