// The driver's session page: follows the session's event stream and keeps the page up to date.
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const base = location.pathname.replace(/\/$/, "");
  const $ = (id) => document.getElementById(id);
  const labels = {
    pending: "starting", awaiting_payment: "awaiting payment", charging: "charging",
    suspended: "suspended (payment due)", awaiting_payment_final: "ended, final invoice due", ended: "ended",
  };
  const series = boot.series.map((p) => ({ t: Date.parse(p.t), e: p.e, p: p.p || 0 }));
  let state = boot.state;
  let source = null;

  const sats = (msat) => {
    if (msat === null || msat === undefined) return "–";
    const whole = Math.trunc(Math.abs(msat) / 1000), rest = Math.abs(msat) % 1000;
    const text = whole.toLocaleString("en-US") + (rest ? ("." + String(rest).padStart(3, "0")).replace(/0+$/, "") : "");
    return (msat < 0 ? "-" : "") + text;
  };
  const kwh = (wh) => (wh === null || wh === undefined ? "–" : (wh / 1000).toFixed(3));
  const kw = (w) => (w === null || w === undefined ? "–" : (w / 1000).toFixed(1));

  function showInvoice(invoice) {
    const card = $("invoice-card");
    if (!invoice) {
      card.hidden = true;
      $("paid-note").hidden = !!state.closed;
      $("paid-text").textContent = state.state === "awaiting_payment" ? "Creating your invoice…"
        : "Paid up. The next invoice comes as you charge.";
      return;
    }
    $("paid-note").hidden = true;
    card.hidden = false;
    card.dataset.key = invoice.key;
    $("invoice-amount").textContent = sats(invoice.amount_msat);
    const note = { final: " (final)", prepay: " (top-up)" }[invoice.kind] || "";
    $("invoice-energy").textContent = "for " + invoice.energy_wh + " Wh" + note;
    $("invoice-link").href = "lightning:" + invoice.bolt11;
    if ($("invoice-qr").getAttribute("src") !== invoice.qr) $("invoice-qr").src = invoice.qr;
    $("bolt11").value = invoice.bolt11;
  }

  function show(s) {
    state = s;
    const badge = $("state");
    badge.textContent = labels[s.state] || s.state;
    badge.className = "badge state-" + s.state;
    badge.dataset.state = s.state;
    $("power").textContent = kw(s.power_w);
    $("energy").textContent = kwh(s.energy_wh);
    $("paid").textContent = sats(s.paid_msat);
    $("credit").textContent = s.credit_wh === null || s.credit_wh === undefined ? "–" : s.credit_wh;
    showInvoice(s.closed ? null : s.invoice);
    if (s.state === "ended" || s.state === "awaiting_payment_final" || s.closed) {
      $("stop-card").hidden = true;
      if ($("lnurl-session-card")) $("lnurl-session-card").hidden = true;  // its links end with the charge
    }
  }

  let refreshing = null, again = false;
  async function refresh() {  // one request at a time; a burst of events makes at most one more
    if (refreshing) { again = true; return refreshing; }
    refreshing = (async () => {
      try {
        const response = await fetch(base + "/state", { credentials: "same-origin", cache: "no-store" });
        if (response.ok) show(await response.json());
      } catch (e) { /* the stream reconnects; the next event refreshes again */ }
    })();
    await refreshing;
    refreshing = null;
    if (again) { again = false; return refresh(); }
  }

  async function showReceipt() {
    const response = await fetch(base + "/receipt", { credentials: "same-origin", cache: "no-store" });
    if (response.ok) $("receipt").innerHTML = await response.text();
  }

  // ------------------------------------------------------------------ the chart (inline SVG)
  const NS = "http://www.w3.org/2000/svg";
  function line(points, color, cls) {
    const path = document.createElementNS(NS, "polyline");
    path.setAttribute("points", points.join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", color);
    path.setAttribute("stroke-width", "2");
    path.setAttribute("class", cls);
    return path;
  }
  function text(x, y, value, anchor, cls) {
    const node = document.createElementNS(NS, "text");
    node.setAttribute("x", x); node.setAttribute("y", y);
    node.setAttribute("text-anchor", anchor); node.setAttribute("class", cls);
    node.textContent = value;
    return node;
  }
  function draw() {
    const svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const W = 320, H = 120, L = 4, R = 316, T = 14, B = 112;
    if (series.length < 2) {
      svg.appendChild(text(W / 2, H / 2, "the chart starts with the charge", "middle", "axis"));
      return;
    }
    const t0 = series[0].t, t1 = Math.max(series[series.length - 1].t, t0 + 1);
    const maxE = Math.max(1, ...series.map((p) => p.e)), maxP = Math.max(1, ...series.map((p) => p.p));
    const x = (t) => (L + ((t - t0) / (t1 - t0)) * (R - L)).toFixed(1);
    const y = (v, max) => (B - (v / max) * (B - T)).toFixed(1);
    svg.appendChild(line(series.map((p) => x(p.t) + "," + y(p.p, maxP)), "#f7931a", "power"));
    svg.appendChild(line(series.map((p) => x(p.t) + "," + y(p.e, maxE)), "#2f81f7", "energy"));
    svg.appendChild(text(L, 10, (maxP / 1000).toFixed(1) + " kW", "start", "axis power"));
    svg.appendChild(text(R, 10, (maxE / 1000).toFixed(3) + " kWh", "end", "axis energy"));
  }

  // ------------------------------------------------------------------ the event stream
  function follow() {
    source = new EventSource(base + "/events?after=" + boot.after);
    const meter = (event) => {
      const data = JSON.parse(event.data);
      if (typeof data.energy_wh === "number") {
        series.push({ t: Date.parse(data.at) || Date.now(), e: data.energy_wh, p: data.power_w || 0 });
        if (series.length > 600) series.shift();
        $("energy").textContent = kwh(data.energy_wh);
        $("power").textContent = kw(data.power_w || 0);
        draw();
      }
      refresh();
    };
    ["started", "meter", "ended"].forEach((kind) => source.addEventListener(kind, meter));
    ["invoice", "paid", "suspended", "resumed", "stopping", "anomaly"].forEach((kind) =>
      source.addEventListener(kind, () => refresh()));
    source.addEventListener("closed", async (event) => {
      if (!JSON.parse(event.data).refundable_msat) source.close();  // else: until the change is taken
      await refresh();
      await showReceipt();
    });
    ["refunded", "refund_failed"].forEach((kind) => source.addEventListener(kind, async () => {
      if (kind === "refunded") source.close();
      await refresh();
      await showReceipt();
    }));
  }

  $("copy").addEventListener("click", async () => {
    const field = $("bolt11");
    try { await navigator.clipboard.writeText(field.value); }
    catch (e) { field.select(); document.execCommand("copy"); }
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
  });

  show(state);
  draw();
  if (!state.closed || state.refundable_msat > 0) follow();  // a receipt with change: until it is taken
})();
