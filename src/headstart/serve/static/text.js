// A text box on the page when the served model is a text model (serve/text.py).
(function () {
  const TOKEN_KEY = "headstart-token";
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }
  async function start() {
    const res = await fetch("/v1/text/model", { headers: headers() });
    if (!res.ok) return;  // an image model, or none: the page stays as it is
    const info = await res.json();
    const view = document.querySelector("#view-try");
    for (const el of view.children) el.hidden = true;
    const box = document.createElement("div");
    box.id = "text-try";
    box.innerHTML = '<p class="muted small"></p>' +
      '<textarea id="text-input" rows="5" style="width:100%" placeholder="one text per line"></textarea>' +
      '<div class="row"><button id="text-predict" class="primary" type="button">Classify</button></div>' +
      '<div id="text-results"></div>';
    view.prepend(box);
    box.querySelector("p").textContent = "Text model (" + info.task + "): " + info.labels.join(", ");
    const chip = document.querySelector("#model-chip");
    if (chip) { chip.textContent = "text model"; chip.classList.remove("muted"); }
    document.querySelector("#text-predict").addEventListener("click", async () => {
      const texts = document.querySelector("#text-input").value.split("\n").map(t => t.trim()).filter(Boolean);
      const out = document.querySelector("#text-results");
      out.textContent = "";
      if (!texts.length) return;
      const r = await fetch("/v1/text/predict", { method: "POST", body: JSON.stringify({ texts }),
        headers: headers({ "Content-Type": "application/json" }) });
      const body = await r.json();
      if (!r.ok) { out.textContent = body.error || ("error " + r.status); return; }
      for (const p of body.predictions) {
        const row = document.createElement("p");
        const shown = p.label !== undefined ? p.label + (p.probability !== undefined ? " (" + p.probability.toFixed(2) + ")" : "")
          : JSON.stringify(Object.fromEntries(Object.entries(p).filter(([k]) => k !== "text")));
        row.textContent = p.text + "  ->  " + shown;
        out.append(row);
      }
    });
  }
  document.addEventListener("DOMContentLoaded", start);
  if (document.readyState !== "loading") start();
})();
