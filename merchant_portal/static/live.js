// Live presence for one venue: server-rendered list, then Socket.IO "presence" events.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("live-data").textContent);
  var S = data.strings;
  var rows = document.getElementById("present-rows");
  var empty = document.getElementById("live-empty");
  var count = document.getElementById("live-count");
  var status = document.getElementById("live-status");
  // Server clock minus ours, so dwell times do not depend on the tablet's clock.
  var offset = data.now - Date.now() / 1000;

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function dwell(since) {
    var s = Math.max(0, Math.floor(Date.now() / 1000 + offset - since));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : m) + ":" + pad(s % 60);
  }
  function findRow(sub) {
    for (var i = 0; i < rows.rows.length; i++) {
      if (rows.rows[i].dataset.subscriber === sub) return rows.rows[i];
    }
    return null;
  }
  function cell(cls, text) {
    var td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    return td;
  }
  function add(p) {
    remove(p.subscriber);
    var tr = document.createElement("tr");
    tr.dataset.subscriber = p.subscriber;
    tr.dataset.since = p.since;
    tr.appendChild(cell("pseudonym", p.subscriber));
    tr.appendChild(cell("zone", p.zone));
    tr.appendChild(cell("dwell", dwell(p.since)));
    rows.appendChild(tr);
  }
  function remove(sub) {
    var tr = findRow(sub);
    if (tr) tr.remove();
  }
  function refresh() {
    var n = rows.rows.length;
    empty.hidden = n > 0;
    count.textContent = S.count.replace("{n}", n);
    for (var i = 0; i < n; i++) {
      rows.rows[i].querySelector(".dwell").textContent = dwell(Number(rows.rows[i].dataset.since));
    }
  }
  function setState(state) {
    status.dataset.state = state;
    status.textContent = S[state];
    document.body.classList.toggle("offline", state !== "connected");
  }
  function resync() {
    // Events are not buffered while disconnected: after any (re)connect, ask for the truth.
    fetch(data.present_url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        // Signed out meanwhile (elsewhere, or the session expired): the page itself then
        // leads to the sign-in form.
        if (r.status === 401) { window.location.reload(); }
        if (!r.ok) throw new Error(r.status);
        return r.json();
      })
      .then(function (doc) {
        offset = doc.now - Date.now() / 1000;
        rows.replaceChildren();
        doc.present.forEach(add);
        refresh();
      })
      .catch(function () { setState("disconnected"); });
  }

  if (typeof io !== "function") {
    // The vendored client is missing (scripts/vendor_js.sh not run): say so, do not pretend.
    setState("disconnected");
    return;
  }
  var socket = io("/portal", { auth: { venue: data.venue } });
  socket.on("connect", function () { setState("connected"); resync(); });
  socket.on("disconnect", function (reason) {
    setState("disconnected");
    // The client retries lost transports itself, but not a server-side close: check once.
    if (reason === "io server disconnect") setTimeout(function () { socket.connect(); }, 1000);
  });
  socket.on("connect_error", function () {
    // Inactive after an error means the server refused us (signed out, no access): say so.
    setState(socket.active ? "disconnected" : "refused");
  });
  socket.on("presence", function (ev) {
    if (ev.venue_id !== data.venue) return;
    if (ev.kind === "enter") add({ subscriber: ev.subscriber, zone: ev.zone, since: ev.at });
    else remove(ev.subscriber);
    refresh();
  });
  // What each zone's devices play now; a veto removes the track everywhere at once.
  var queues = document.getElementById("queues");
  var queuesEmpty = document.getElementById("queues-empty");
  function button(cls, label, track) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.dataset.track = track;
    b.textContent = label;
    return b;
  }
  function showQueue(ev) {
    var box = queues.querySelector('[data-zone="' + CSS.escape(ev.zone) + '"]');
    if (!box) {
      box = document.createElement("div");
      box.className = "zone-queue";
      box.dataset.zone = ev.zone;
      var h = document.createElement("h3");
      h.textContent = ev.zone;
      box.appendChild(h);
      queues.appendChild(box);
    }
    var ol = document.createElement("ol");
    ol.className = "tracks";
    ((ev.queue || {}).tracks || []).forEach(function (tr, i) {
      var li = document.createElement("li");
      li.dataset.track = tr.id;
      var span = document.createElement("span");
      span.className = "track";
      span.textContent = tr.title + " — " + tr.artist;
      li.appendChild(span);
      if (i === 0) li.appendChild(button("skip", S.skip, tr.id));
      li.appendChild(button("veto", S.veto, tr.id));
      ol.appendChild(li);
    });
    var old = box.querySelector("ol.tracks");
    if (old) old.replaceWith(ol); else box.appendChild(ol);
    queuesEmpty.hidden = queues.querySelector("ol.tracks li") !== null;
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": data.csrf },
      body: JSON.stringify(body)
    });
  }
  queues.addEventListener("click", function (e) {
    var b = e.target.closest("button.veto, button.skip");
    if (!b) return;
    b.disabled = true;
    var li = b.closest("li");
    if (b.classList.contains("veto")) {
      post(data.veto_url, { track: b.dataset.track })
        .then(function (r) { if (!r.ok) b.disabled = false; });
      return;
    }
    var zone = b.closest(".zone-queue").dataset.zone;
    post(data.skip_url, { zone: zone, track: b.dataset.track }).then(function (r) {
      if (!r.ok) { b.disabled = false; return; }
      // The devices move on; so does this view, until the zone's next queue arrives.
      var next = li.nextElementSibling;
      li.remove();
      if (next) next.insertBefore(button("skip", S.skip, next.dataset.track), next.lastChild);
      queuesEmpty.hidden = queues.querySelector("ol.tracks li") !== null;
    });
  });
  socket.on("queue", function (ev) {
    if (ev.venue_id !== data.venue) return;
    showQueue(ev);
  });
  refresh();
  setInterval(refresh, 1000);
})();
