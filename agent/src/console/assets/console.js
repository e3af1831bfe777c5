// phiwatch console: the theme switch and the deadline countdowns. Everything else works
// without script.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem("phiwatch-theme"); } catch (e) { /* storage off */ }
  if (saved === "dark" || saved === "light") { root.setAttribute("data-theme", saved); }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function tick() {
    var now = Date.now();
    var clocks = document.querySelectorAll(".countdown[data-due]");
    for (var i = 0; i < clocks.length; i++) {
      var due = parseInt(clocks[i].getAttribute("data-due"), 10);
      if (!due) { continue; }
      var left = Math.floor((due - now) / 1000);
      var late = left < 0;
      left = Math.abs(left);
      var d = Math.floor(left / 86400), h = Math.floor(left % 86400 / 3600);
      var m = Math.floor(left % 3600 / 60), s = left % 60;
      var text = d + "d " + pad(h) + ":" + pad(m) + ":" + pad(s);
      clocks[i].textContent = late ? "overdue by " + text : text + " left";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme");
    if (button) {
      button.addEventListener("click", function () {
        var dark = root.getAttribute("data-theme") === "dark" ||
          (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
        var next = dark ? "light" : "dark";
        root.setAttribute("data-theme", next);
        try { localStorage.setItem("phiwatch-theme", next); } catch (e) { /* storage off */ }
      });
    }
    tick();
    setInterval(tick, 1000);
  });
}());
