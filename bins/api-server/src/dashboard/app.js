// The dashboard's only script. Everything works without it; it adds two conveniences:
// copy buttons next to secrets shown once, and, after a purchase, watching the balance
// (GET /api/v1/credits) until the credits land, so no reload is needed.
"use strict";

function setUpCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) continue;
    const label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent);
        button.textContent = "Copied";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = label; }, 3000);
    });
  }
}

function watchPurchase() {
  const notice = document.getElementById("purchase-notice");
  const balance = document.getElementById("balance");
  if (!notice || !balance || !notice.dataset.waiting) return;
  const before = balance.dataset.balance;
  const pack = notice.dataset.pack || "credits";
  let tries = 0;
  const tick = async () => {
    tries += 1;
    try {
      const res = await fetch("/api/v1/credits", {
        credentials: "same-origin",
        headers: { accept: "application/json" },
      });
      if (res.ok) {
        const now = String((await res.json()).balance);
        if (now !== before) {
          balance.textContent = now;
          balance.dataset.balance = now;
          notice.textContent = `Your purchase of ${pack} arrived: your balance is now ${now} credits.`;
          notice.classList.remove("waiting");
          notice.classList.add("done");
          delete notice.dataset.waiting;
          return;
        }
      }
    } catch (_) {
      // A failed poll is tried again.
    }
    if (tries < 600) setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyButtons();
  watchPurchase();
});
