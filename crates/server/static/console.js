// seatkeeper console: live figures over server-sent events. A page that shows figures names
// its stream in <body data-live="…">; each `figures` message carries the subscriptions whose
// counts moved, and each element data-testid="{tenant}.{product}.{metric}" takes its number.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-live");
  if (!url || !window.EventSource) { return; }
  var source = new EventSource(url);
  source.addEventListener("figures", function (msg) {
    var rows = JSON.parse(msg.data);
    rows.forEach(function (r) {
      ["seats", "active", "waitlisted", "overage", "idle", "seat_free"].forEach(function (m) {
        var id = r.tenant + "." + r.product + "." + m;
        document.querySelectorAll('[data-testid="' + CSS.escape(id) + '"]').forEach(function (el) {
          if (el.textContent !== String(r[m])) { el.textContent = String(r[m]); }
        });
      });
      document.querySelectorAll('[data-meter="' + CSS.escape(r.tenant + "." + r.product) + '"]').forEach(function (el) {
        el.max = r.seats; el.value = r.active;
      });
    });
  });
  source.addEventListener("event", function (msg) {
    var list = document.querySelector('[data-testid="events"]');
    if (!list) { return; }
    var e = JSON.parse(msg.data);
    var li = document.createElement("li");
    var code = document.createElement("code");
    code.textContent = e.type;
    li.appendChild(code);
    li.appendChild(document.createTextNode(" " + ((e.resource && e.resource.type) || "")));
    if (list.hasAttribute("data-tenants")) { li.appendChild(document.createTextNode(" · " + e.tenant)); }
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 50) { list.removeChild(list.lastChild); }
  });
})();
