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

  // The browser's time zone, for pages that show times (the profile can choose another;
  // environments/web/timezones.py). Set once; later pages render in it.
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;  // "Europe/Amsterdam"
    if (zone && !document.cookie.split("; ").includes(`tz=${zone}`)) {
      document.cookie = `tz=${zone}; path=/; max-age=31536000; samesite=lax`;
    }
    // The profile page offers "the browser's zone": say which one it is.
    document.querySelectorAll("[data-browser-zone]").forEach((el) => {
      el.textContent = el.dataset.browserZone.replace("{}", zone);
    });
  } catch (e) { /* no Intl: times stay in UTC */ }
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
    // Inline handlers are not allowed (the Content-Security-Policy): behaviour lives here.
    document.querySelectorAll("[data-select-on-focus]").forEach((el) => {
      el.addEventListener("focus", () => el.select());
    });
    document.querySelectorAll("[data-history-back]").forEach((el) => {
      el.addEventListener("click", (event) => {
        if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
      });
    });
    // Confirmation for destructive buttons (forms also carry a server-side confirm step).
    document.body.addEventListener("submit", (event) => {
      const message = event.target.dataset && event.target.dataset.confirm;
      if (message && !window.confirm(message)) event.preventDefault();
    });
  });
})();
