// The operator dashboard: the live part comes re-rendered over server-sent events; commands are posted
// with the login's CSRF token in a header.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const live = document.getElementById("live");
  const status = document.getElementById("live-status");
  const flash = document.getElementById("flash");

  function say(text, ok) {
    flash.textContent = text;
    flash.className = "flash " + (ok ? "ok" : "bad");
    flash.hidden = false;
  }

  const source = new EventSource("/dashboard/live");
  source.addEventListener("live", (event) => {
    live.innerHTML = JSON.parse(event.data).html;
    status.textContent = "live";
  });
  source.addEventListener("logged_out", () => { source.close(); location.reload(); });
  source.onerror = () => { status.textContent = "reconnecting…"; };

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.classList.contains("command")) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        credentials: "same-origin",
      });
      const answer = await response.json();
      say(answer.message, answer.ok);
    } catch (e) {
      say("The command could not be sent: " + e, false);
    } finally {
      button.disabled = false;
    }
  });
})();
