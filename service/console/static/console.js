// The console's only script: small conveniences. Every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A form that asks first (replay everything matching).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // "Copy link": the page's own address, for a support ticket.
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(window.location.href);
        button.textContent = "Copied";
      } catch {
        window.prompt("Copy this address", window.location.href);
      }
    });
  }
  // A running task's page follows it until it is done.
  const follow = document.querySelector("[data-refresh]");
  if (follow) window.setTimeout(() => window.location.reload(), Number(follow.dataset.refresh) || 1000);
});
