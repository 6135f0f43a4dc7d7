// Small progressive enhancements; every flow works without this file.
(() => {
  // "2d 3h", "4h 05m 09s", "12m 30s": seconds show below a day so the clock visibly runs.
  function formatLeft(ms) {
    if (ms <= 0) return "Expired";  // the server says the same (templatetags/portal.py)
    let seconds = Math.floor(ms / 1000);
    const days = Math.floor(seconds / 86400); seconds -= days * 86400;
    const hours = Math.floor(seconds / 3600); seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60); seconds -= minutes * 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (days) return `${days}d ${hours}h`;
    if (hours) return `${hours}h ${pad(minutes)}m ${pad(seconds)}s`;
    return `${minutes}m ${pad(seconds)}s`;
  }

  // Countdowns read data-expires (ISO 8601) and tick each second, also after htmx swaps.
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-expires]").forEach((el) => {
      const expires = Date.parse(el.dataset.expires);
      if (!Number.isNaN(expires)) el.textContent = formatLeft(expires - now);
    });
  }

  // Tables of the admin pages stack into one card per row on phones (portal.css): each
  // cell is labelled with its column's heading. Without this file they scroll sideways
  // inside their .table-wrap instead.
  function labelCells() {
    document.querySelectorAll("table.table").forEach((table) => {
      const headings = Array.from(table.querySelectorAll("thead th")).map((th) =>
        th.querySelector(".visually-hidden") ? "" : th.textContent.trim());
      table.querySelectorAll("tbody tr").forEach((row) => {
        Array.from(row.children).forEach((cell, i) => {
          if (!cell.hasAttribute("data-label") && headings[i]) cell.dataset.label = headings[i];
        });
      });
      table.classList.add("stacks");
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    labelCells();
    tick();
    setInterval(tick, 1000);
    document.body.addEventListener("htmx:afterSwap", tick);
    // Confirmation for destructive buttons (forms also carry a server-side confirm step).
    document.body.addEventListener("submit", (event) => {
      const message = event.target.dataset && event.target.dataset.confirm;
      if (message && !window.confirm(message)) event.preventDefault();
    });
  });
})();
