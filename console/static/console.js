// The console's only script (served as a file: the Content-Security-Policy allows no inline script).
// 1. An element with data-refresh-url is replaced by that fragment every data-refresh-s seconds,
//    unless the page is hidden or someone is typing in a form inside it.
// 2. A "select all" checkbox toggles every row checkbox of its table.
(function () {
  "use strict";

  function busy(container) {
    var active = document.activeElement;
    if (active && container.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
      return true;
    }
    var inputs = container.querySelectorAll("input[type=text]");
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].value) { return true; }
    }
    return false;
  }

  function poll(container) {
    var url = container.getAttribute("data-refresh-url");
    var seconds = parseFloat(container.getAttribute("data-refresh-s") || "5");
    function tick() {
      if (document.hidden || busy(container)) { schedule(); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined && !busy(container)) {
            container.innerHTML = html;
            container.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { /* the next tick tries again */ })
        .then(schedule);
    }
    function schedule() { window.setTimeout(tick, seconds * 1000); }
    schedule();
  }

  function selectAll(box) {
    box.addEventListener("change", function () {
      var table = box.closest("table");
      var boxes = table.querySelectorAll("input[type=checkbox][name=ids]");
      for (var i = 0; i < boxes.length; i++) { boxes[i].checked = box.checked; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var containers = document.querySelectorAll("[data-refresh-url]");
    for (var i = 0; i < containers.length; i++) { poll(containers[i]); }
    var boxes = document.querySelectorAll("#select-all");
    for (var j = 0; j < boxes.length; j++) { selectAll(boxes[j]); }
  });
})();
