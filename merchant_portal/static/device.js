// The playback device: pair with a code, then show what consent allows and obey revokes.
(function () {
  "use strict";
  var KEY = "cm-device-token";
  var data = JSON.parse(document.getElementById("device-data").textContent);
  var S = data.strings;
  var pairPanel = document.getElementById("pair-panel");
  var playPanel = document.getElementById("play-panel");
  var pushes = document.getElementById("pushes");
  var waiting = document.getElementById("device-waiting");
  var status = document.getElementById("device-status");
  var socket = null;
  // Expiry (defence in depth: the server's revoke may never come, or be sent while offline):
  // a push or queue is used only until its expires_at, never if it arrives expired. Judged on
  // this device's clock, advanced when a server timestamp (a queue's computed_at) shows it is
  // behind; a clock ahead only forgets early, and no grace is added.
  var behind = 0;  // seconds this clock was found behind the server's
  var queueEvent = null;  // the queue in force
  var gone = {};  // pseudonym -> true: their push expired, their tracks leave the queue
  var timer = null;

  function now() { return Date.now() / 1000 + behind; }
  function expired(ev) {
    return typeof ev.expires_at === "number" && ev.expires_at <= now();
  }
  function schedule() {
    // One timer, at the earliest expiry in force (re-armed after each change).
    var ends = [];
    for (var i = 0; i < pushes.children.length; i++) {
      ends.push(Number(pushes.children[i].dataset.expiresAt));
    }
    if (queueEvent && typeof queueEvent.expires_at === "number") ends.push(queueEvent.expires_at);
    ends = ends.filter(function (x) { return isFinite(x); });
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (ends.length) {
      var ms = Math.max(0, (Math.min.apply(null, ends) - now()) * 1000);
      timer = setTimeout(sweep, Math.min(ms, 2147483647));
    }
  }
  function dropMember(sub) {
    gone[sub] = true;
    var list = document.getElementById("queue");
    Array.prototype.slice.call(list.children).forEach(function (li) {
      if (li.dataset.by === sub) li.remove();
    });
    document.getElementById("queue-panel").hidden = list.children.length === 0;
  }
  function sweep() {
    timer = null;
    Array.prototype.slice.call(pushes.children).forEach(function (li) {
      if (Number(li.dataset.expiresAt) <= now()) {
        li.remove();
        dropMember(li.dataset.subscriber);
      }
    });
    if (queueEvent && expired(queueEvent)) { queueEvent = null; showQueue({}); }
    refresh();
    schedule();
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setState(state) {
    status.dataset.state = state;
    status.textContent = S[state];
  }
  function refresh() { waiting.hidden = pushes.children.length > 0; }
  function find(sub) {
    for (var i = 0; i < pushes.children.length; i++) {
      if (pushes.children[i].dataset.subscriber === sub) return pushes.children[i];
    }
    return null;
  }
  function showPush(ev) {
    if (expired(ev)) {
      // Arrived expired: never shown, and its member leaves the queue unless shown already.
      if (!find(ev.subscriber)) dropMember(ev.subscriber);
      return;
    }
    delete gone[ev.subscriber];
    var old = find(ev.subscriber);
    var li = el("li", "card push");
    li.dataset.subscriber = ev.subscriber;
    if (typeof ev.expires_at === "number") li.dataset.expiresAt = String(ev.expires_at);
    li.appendChild(el("h2", "pseudonym", ev.subscriber));
    li.appendChild(el("p", "muted", S.zone.replace("{zone}", ev.zone)));
    if (ev.playlist) {
      li.appendChild(el("p", "scope", S.playlist + " — " + ev.playlist.title));
      var ol = el("ol", "tracks");
      ev.playlist.tracks.forEach(function (t) {
        var item = el("li", t.explicit ? "explicit" : "", t.title + " — " + t.artist);
        if (t.explicit) item.appendChild(el("span", "badge", "E"));
        ol.appendChild(item);
      });
      li.appendChild(ol);
    } else if (ev.preferences) {
      li.appendChild(el("p", "scope", S.preferences));
      var genres = Object.keys(ev.preferences.genres).sort(function (a, b) {
        return ev.preferences.genres[b] - ev.preferences.genres[a];
      });
      var ul = el("ul", "genres");
      genres.forEach(function (g) { ul.appendChild(el("li", "genre", g)); });
      li.appendChild(ul);
      if (ev.preferences.mood) {
        li.appendChild(el("p", "mood", S.mood.replace("{mood}", ev.preferences.mood)));
      }
    }
    if (old) pushes.replaceChild(li, old); else pushes.appendChild(li);
  }
  function showQueue(ev) {
    // The zone's blended queue replaces the previous one whole: the server already applied
    // the merchant's rules (explicit, vetoes) and says the volume cap the player must respect.
    var q = ev.queue || {};
    var list = document.getElementById("queue");
    var vol = document.getElementById("queue-volume");
    list.replaceChildren();
    (q.tracks || []).forEach(function (t) {
      if (gone[t.by]) return;  // their push expired
      var li = el("li", "", t.title + " — " + t.artist);
      li.dataset.track = t.id;
      li.dataset.by = t.by;
      li.appendChild(el("span", "by", S.by.replace("{who}", t.by)));
      list.appendChild(li);
    });
    vol.hidden = q.volume_max === null || q.volume_max === undefined;
    vol.textContent = vol.hidden ? "" : S.volume.replace("{v}", q.volume_max);
    document.getElementById("queue-panel").hidden = list.children.length === 0;
  }
  function skipTrack(track) {
    // Staff skipped the track now playing here: move on to the next one (not a veto).
    var list = document.getElementById("queue");
    for (var i = 0; i < list.children.length; i++) {
      if (list.children[i].dataset.track === track) { list.children[i].remove(); break; }
    }
    document.getElementById("queue-panel").hidden = list.children.length === 0;
  }
  function onEvent(ev) {
    if (ev.type === "push") showPush(ev);
    else if (ev.type === "revoke") { var li = find(ev.subscriber); if (li) li.remove(); }
    else if (ev.type === "control" && ev.action === "skip") skipTrack(ev.track);
    refresh();
    schedule();
    // Ack only after the page obeyed: the server keeps unacked events for a reconnect.
    socket.emit("ack", { event_id: ev.event_id });
  }
  function showPairing(revoked) {
    if (socket) { socket.disconnect(); socket = null; }
    localStorage.removeItem(KEY);
    pushes.replaceChildren();
    queueEvent = null;
    showQueue({});
    schedule();
    playPanel.hidden = true;
    pairPanel.hidden = false;
    document.getElementById("device-revoked").hidden = !revoked;
    document.getElementById("pair-code-input").focus();
  }
  function connect(token) {
    pairPanel.hidden = true;
    playPanel.hidden = false;
    setState("connecting");
    refresh();
    if (typeof io !== "function") { setState("disconnected"); return; }
    socket = io("/device", { auth: { token: token } });
    socket.on("connect", function () { setState("connected"); });
    socket.on("event", onEvent);
    socket.on("queue", function (ev) {
      if (typeof ev.computed_at === "number") {
        behind = Math.max(behind, ev.computed_at - Date.now() / 1000);
      }
      if (!expired(ev)) {  // one that arrived expired is ignored (acked all the same)
        queueEvent = ev;
        showQueue(ev);
        schedule();
      }
      socket.emit("ack", { event_id: ev.event_id });
    });
    socket.on("disconnect", function (reason) {
      setState("disconnected");
      // The server drops a device it revoked or re-keyed: check whether the token still works.
      if (reason === "io server disconnect") socket.connect();
    });
    socket.on("connect_error", function (err) {
      if (/token|revoked|suspended/.test(String(err && err.message))) showPairing(true);
      else setState("disconnected");
    });
  }

  document.getElementById("pair-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var code = document.getElementById("pair-code-input").value;
    var error = document.getElementById("pair-error");
    fetch(data.pair_url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ code: code }),
    })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
      .then(function (res) {
        if (!res.ok) { error.hidden = false; return; }
        error.hidden = true;
        localStorage.setItem(KEY, res.body.token);
        connect(res.body.token);
      })
      .catch(function () { error.hidden = false; });
  });
  document.getElementById("unpair").addEventListener("click", function () { showPairing(false); });

  // A technician may hand over a rotated token as /portal/device#token=...; keep it off the URL.
  var m = /^#token=([A-Za-z0-9_-]{20,200})$/.exec(location.hash);
  if (m) {
    localStorage.setItem(KEY, m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
  var token = localStorage.getItem(KEY);
  if (token) connect(token); else showPairing(false);
})();
