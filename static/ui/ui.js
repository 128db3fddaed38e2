/* exalate-node admin UI: small progressive enhancements, no dependencies.
   - [data-copy]: copy the target's text (navigator.clipboard, falling back to select + execCommand)
   - form[data-confirm]: ask before submitting
   - select[data-retarget]: point a form's action at the chosen connection
   - textarea.code: line numbers, light Python highlighting, problem lines marked
   - table[data-progress-url]: refresh the bulk jobs' progress bars every 2 s while a job is queued or running
   - [data-live]: parts of a page that change on their own (states, counts, timelines) are fetched again every
     second and swapped in place, while the tab is visible; open <details> stay open, a part the admin is
     typing, clicking or selecting text in is left alone until they are done */
(function () {
  "use strict";

  function copyText(target, status) {
    var text = target.value !== undefined ? target.value : target.textContent;
    function selected() {
      target.focus();
      if (target.select) { target.select(); }
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      status.textContent = ok ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { status.textContent = "Copied."; }, selected);
    } else {
      selected();
    }
  }

  var KEYWORDS = "if|elif|else|for|while|in|not|and|or|is|None|True|False|def|return|break|continue|pass|lambda|try|except|finally|raise|with|as|del";
  var NAMES = "issue|replica|previous|first_sync|changed|node_helper|comment_helper|attachment_helper|sync_helper|entity";
  var TOKENS = new RegExp(
    "(#[^\\n]*)|(\"\"\"[\\s\\S]*?\"\"\"|'''[\\s\\S]*?'''|\"(?:\\\\.|[^\"\\\\\\n])*\"|'(?:\\\\.|[^'\\\\\\n])*')" +
    "|\\b(\\d+(?:\\.\\d+)?)\\b|\\b(" + KEYWORDS + ")\\b|\\b(" + NAMES + ")\\b", "g");

  function escapeHtml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function highlight(src) {
    var out = "", last = 0, m;
    TOKENS.lastIndex = 0;
    while ((m = TOKENS.exec(src)) !== null) {
      out += escapeHtml(src.slice(last, m.index));
      var cls = m[1] ? "tok-comment" : m[2] ? "tok-string" : m[3] ? "tok-number" : m[4] ? "tok-keyword" : "tok-name";
      out += '<span class="' + cls + '">' + escapeHtml(m[0]) + "</span>";
      last = TOKENS.lastIndex;
    }
    return out + escapeHtml(src.slice(last)) + "\n";
  }

  function codeEditor(textarea) {
    var problems = (textarea.dataset.problems || "").split(",").filter(Boolean).map(Number);
    var wrap = document.createElement("div");
    wrap.className = "code-editor";
    var gutter = document.createElement("div");
    gutter.className = "gutter";
    gutter.setAttribute("aria-hidden", "true");
    var area = document.createElement("div");
    area.className = "code-area";
    var pre = document.createElement("pre");
    pre.className = "highlight";
    pre.setAttribute("aria-hidden", "true");
    textarea.parentNode.insertBefore(wrap, textarea);
    wrap.appendChild(gutter);
    wrap.appendChild(area);
    area.appendChild(pre);
    area.appendChild(textarea);
    textarea.setAttribute("wrap", "off");

    function render() {
      var lines = textarea.value.split("\n").length;
      var html = "";
      for (var i = 1; i <= lines; i++) {
        html += '<div class="' + (problems.indexOf(i) >= 0 ? "ln bad" : "ln") + '">' + i + "</div>";
      }
      gutter.innerHTML = html;
      pre.innerHTML = highlight(textarea.value);
      sync();
    }
    function sync() {
      gutter.scrollTop = textarea.scrollTop;
      pre.scrollTop = textarea.scrollTop;
      pre.scrollLeft = textarea.scrollLeft;
    }
    textarea.addEventListener("input", function () { problems = []; render(); });
    textarea.addEventListener("scroll", sync);
    textarea.addEventListener("keydown", function (ev) {
      if (ev.key === "Tab" && !ev.shiftKey && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        var s = textarea.selectionStart;
        textarea.setRangeText("    ", s, textarea.selectionEnd, "end");
        render();
      }
    });
    render();
  }

  function gotoLine(textarea, line) {
    var lines = textarea.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) { start += lines[i].length + 1; }
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
    var lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 18;
    textarea.scrollTop = Math.max(0, (line - 4) * lineHeight);
  }

  var ACTIVE = ["queued", "running"];

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "estimating…"; }
    if (seconds < 60) { return seconds + " s"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s"; }
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  function setText(row, selector, text) {
    var el = row.querySelector(selector);
    if (el) { el.textContent = text; }
  }

  function updateJob(row, job) {
    var wasActive = ACTIVE.indexOf(row.dataset.status) >= 0;
    var active = ACTIVE.indexOf(job.status) >= 0;
    row.dataset.status = job.status;
    var bar = row.querySelector(".progress");
    var fill = row.querySelector(".progress-fill");
    if (bar) { bar.setAttribute("aria-valuenow", job.percent); }
    if (fill) {
      fill.style.width = job.percent + "%";
      fill.classList.toggle("with-errors", job.errors > 0);
      fill.classList.toggle("stopped", job.status === "failed" || job.status === "cancelled");
    }
    setText(row, ".progress-done", job.done + " / " + job.total);
    setText(row, ".progress-percent", job.percent + "%");
    setText(row, ".progress-rate", job.rate_per_s + "/s");
    setText(row, ".progress-left", active ? duration(job.seconds_left) : "—");
    var status = row.querySelector(".job-status");
    if (status) {
      status.textContent = job.status_label;
      status.className = "badge badge-" + job.status + " job-status";
    }
    var errors = row.querySelector(".progress-errors summary");
    if (errors) {
      errors.textContent = job.errors + (job.errors === 1 ? " error" : " errors");
    } else if (job.errors > 0) {
      setText(row, ".progress-errors", job.errors + (job.errors === 1 ? " error" : " errors") + " (refresh to see them)");
    }
    if (!active) {
      var cancel = row.querySelector(".cancel-form");
      if (cancel) { cancel.remove(); }
    }
    return wasActive && !active;
  }

  function pollProgress(table) {
    var note = document.querySelector(".progress-note");
    function tick() {
      fetch(table.dataset.progressUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
        .then(function (data) {
          var running = false;
          data.jobs.forEach(function (job) {
            var row = table.querySelector('tr[data-job="' + job.id + '"]');
            if (row) { updateJob(row, job); }
            if (ACTIVE.indexOf(job.status) >= 0) { running = true; }
          });
          if (running) {
            window.setTimeout(tick, 2000);
          } else if (note) {
            note.textContent = "All jobs have finished.";
          }
        })
        .catch(function () {
          if (note) { note.textContent = "Progress could not be refreshed: use the Refresh link."; }
        });
    }
    window.setTimeout(tick, 2000);
  }

  var LIVE_INTERVAL_MS = 1000;

  function openDetails(region) {
    var open = {};
    region.querySelectorAll("details").forEach(function (d, i) {
      open[d.id || "#" + i] = d.open;
    });
    return open;
  }

  function restoreDetails(region, open) {
    region.querySelectorAll("details").forEach(function (d, i) {
      var key = d.id || "#" + i;
      if (key in open) { d.open = open[key]; }
    });
  }

  var pressing = false;  // a click in progress: swapping now would drop it (mousedown and mouseup on different nodes)
  document.addEventListener("pointerdown", function () { pressing = true; }, true);
  document.addEventListener("pointerup", function () { pressing = false; }, true);
  document.addEventListener("pointercancel", function () { pressing = false; }, true);

  function busy(region) {
    if (pressing) { return true; }
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active) &&
        /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) { return true; }
    var selection = window.getSelection && window.getSelection();  // text being selected or copied
    return !!(selection && !selection.isCollapsed && selection.rangeCount &&
      region.contains(selection.getRangeAt(0).commonAncestorContainer));
  }

  function liveRegions() {
    var timer = null, stopped = false, inflight = false, polls = 0;
    var status = document.querySelector(".live-status");

    function schedule() {
      window.clearTimeout(timer);
      if (!stopped && !document.hidden) { timer = window.setTimeout(tick, LIVE_INTERVAL_MS); }
    }

    function stop(message) {
      stopped = true;
      if (status) { status.textContent = message; status.classList.add("stopped"); }
    }

    function tick() {
      if (inflight || stopped) { return; }
      inflight = true;
      var sent = window.location.href;
      fetch(sent, { credentials: "same-origin", headers: { "X-Live-Poll": "1", "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected && new URL(response.url).pathname !== window.location.pathname) {
            throw new Error("signed out");  // the session ended: the login page came back
          }
          if (!response.ok && response.status !== 400) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          inflight = false;
          if (sent !== window.location.href) { return; }  // the page moved on meanwhile
          var fresh = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live]").forEach(function (region) {
            var next = region.id && fresh.getElementById(region.id);
            if (!next || next.innerHTML === region.innerHTML || busy(region)) { return; }
            var open = openDetails(region);
            region.innerHTML = next.innerHTML;
            restoreDetails(region, open);
          });
          if (status) { status.textContent = "Live"; status.classList.remove("stopped"); }
          polls += 1;
          document.documentElement.dataset.livePolls = String(polls);  // tests wait on it
          schedule();
        })
        .catch(function (err) {
          inflight = false;
          if (err.message === "signed out") {
            stop("Not refreshing: you were signed out. Reload the page to sign in again.");
          } else {
            if (status) { status.textContent = "Could not refresh; trying again…"; status.classList.add("stopped"); }
            timer = window.setTimeout(schedule, 4 * LIVE_INTERVAL_MS);
          }
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { window.clearTimeout(timer); } else { tick(); }
    });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("[data-live]")) { liveRegions(); }
    document.querySelectorAll("table[data-progress-url]").forEach(pollProgress);
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.querySelector(button.dataset.copy);
        var status = button.parentNode.querySelector(".copy-status") || button;
        if (target) { copyText(target, status); }
      });
    });
    // Delegated, so forms inside a [data-live] part still ask after the part was swapped.
    document.addEventListener("submit", function (ev) {
      var form = ev.target;
      if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) { ev.preventDefault(); }
    });
    document.querySelectorAll("select[data-retarget]").forEach(function (select) {
      var form = document.querySelector(select.dataset.retarget);
      select.addEventListener("change", function () {
        form.action = form.dataset.actionTemplate.replace("/0/", "/" + select.value + "/");
      });
    });
    document.querySelectorAll("textarea.code").forEach(codeEditor);
    document.querySelectorAll("[data-goto]").forEach(function (link) {
      link.addEventListener("click", function (ev) {
        ev.preventDefault();
        var ta = document.getElementById("id_" + link.dataset.goto);
        if (ta) { gotoLine(ta, Number(link.dataset.line)); }
      });
    });
  });
})();
