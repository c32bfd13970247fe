// nixbus: the live parts of the pages. Everything works without it but
// the live log and the confirmations.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button[data-confirm]")) {
    b.addEventListener("click", (e) => {
      if (!window.confirm(b.dataset.confirm)) e.preventDefault();
    });
  }
  const log = document.getElementById("log");
  if (!log || !log.dataset.live) return;
  const state = document.getElementById("live-state");
  const follow = () => window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  const es = new EventSource(log.dataset.live);
  es.addEventListener("chunk", (e) => {
    const stick = follow();
    log.append(document.createTextNode(JSON.parse(e.data)));
    if (stick) window.scrollTo(0, document.body.scrollHeight);
  });
  es.addEventListener("reset", () => {
    log.textContent = "";
    state.textContent = "Live: the build started again…";
  });
  es.addEventListener("end", (e) => {
    es.close();
    const t = JSON.parse(e.data);
    state.textContent = t.truncated ? "The live log reached its limit; loading the stored log…" : "The build ended; loading its result…";
    window.setTimeout(() => window.location.reload(), 1000);
  });
  es.onerror = () => { state.textContent = "Live: reconnecting…"; };
  es.onopen = () => { state.textContent = "Live: following the build's log…"; };
});
