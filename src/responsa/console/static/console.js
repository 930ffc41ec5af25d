// Follows a running background response: polls the events stored for it (from whichever replica
// runs it), shows them as they arrive, and reloads the page once the response has ended.
// Everything is written with textContent: nothing received is ever parsed as HTML.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var url = live.getAttribute("data-events");
  var after = -1;
  var text = document.getElementById("live-text");
  var rows = document.getElementById("live-events");
  var status = document.getElementById("live-status");
  var ended = ["completed", "failed", "incomplete", "cancelled"];

  function show(ev) {
    var row = document.createElement("tr");
    var seq = document.createElement("td");
    var type = document.createElement("td");
    seq.textContent = String(ev.sequence_number);
    type.textContent = ev.type;
    row.appendChild(seq);
    row.appendChild(type);
    rows.appendChild(row);
    if (ev.type === "response.output_text.delta" && typeof ev.delta === "string") {
      text.textContent += ev.delta;
    }
  }

  function poll() {
    fetch(url + "?after=" + after, {credentials: "same-origin", headers: {accept: "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (body) {
        (body.events || []).forEach(function (ev) {
          show(ev);
          if (typeof ev.sequence_number === "number") after = ev.sequence_number;
        });
        if (body.status) status.textContent = body.status;
        if (body.signed_out || ended.indexOf(body.status) >= 0) {
          window.location.reload();
          return;
        }
        setTimeout(poll, 500);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  live.setAttribute("data-following", "true");
  poll();
})();
