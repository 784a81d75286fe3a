// offload dashboard: live refresh and confirmations. No dependencies.
(function () {
  "use strict";

  // Asks before destructive form posts (delegated, so refreshed forms work too).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  var live = document.getElementById("live");
  if (!live) return;
  var toggle = document.getElementById("live-toggle");
  var updated = document.getElementById("updated");
  var every = Math.max(1000, Number(live.getAttribute("data-refresh")) || 3000);
  var busy = false;

  // Re-fetches this page and swaps in the fresh #live region. The server
  // renders (and escapes) it; nothing from the response runs as script.
  function refresh() {
    if (busy || document.hidden || (toggle && !toggle.checked)) return;
    // Do not pull content from under a focused control.
    if (live.contains(document.activeElement) && document.activeElement.matches("a, input, select, textarea, button, pre")) return;
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Offload-Refresh": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (!fresh) return;
        live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
        if (updated) updated.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { if (updated) updated.textContent = "offline: retrying"; })
      .finally(function () { busy = false; });
  }

  window.setInterval(refresh, every);
})();
