// relay console: the little behaviour the pages need; everything works without it,
// except the events page's self-refresh.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // a "select all" box selects the boxes named in its data-select-all
  for (const box of document.querySelectorAll("input[data-select-all]")) {
    box.addEventListener("change", () => {
      const name = box.dataset.selectAll;
      for (const item of box.form.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
        item.checked = box.checked;
      }
    });
  }

  // the events page: fetch its first page's rows again every few seconds while ticked
  const refresh = document.getElementById("auto-refresh");
  const table = document.getElementById("events");
  if (refresh && table) {
    const seconds = Number(refresh.dataset.seconds) || 5;
    let timer = null;
    const reload = async () => {
      try {
        const answer = await fetch(refresh.dataset.url, {credentials: "same-origin", redirect: "manual"});
        if (answer.status !== 200) {  // logged out, or the filter became invalid: stop
          refresh.checked = false;
          schedule();
          return;
        }
        const html = await answer.text();
        const holder = document.createElement("table");
        holder.innerHTML = html;  // our own server-rendered, escaped rows
        const rows = holder.querySelector("tbody");
        if (rows) {
          table.querySelector("tbody").replaceWith(rows);
          // "Older" goes on from the last row shown now, not from the page first loaded:
          // the rows the refresh pushed off the first page are on the next one
          const older = document.getElementById("older");
          if (older) {
            older.hidden = !rows.dataset.older;
            if (rows.dataset.older) older.href = rows.dataset.older;
          }
        }
        table.dataset.refreshed = String(Date.now());
      } catch (error) {
        // the server is restarting: try again at the next tick
      }
    };
    const schedule = () => {
      clearInterval(timer);
      timer = refresh.checked ? setInterval(reload, seconds * 1000) : null;
    };
    refresh.addEventListener("change", schedule);
    schedule();
  }
});
