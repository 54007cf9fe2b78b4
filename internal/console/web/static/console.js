// The console's only script: it keeps the saga page and the counts up to date with server-sent
// events, and submits the operators' forms without leaving the page. Every page works without it.
"use strict";

function setText(el, text) {
  if (el) { el.textContent = text; }
}

function setStatus(el, status) {
  if (!el) { return; }
  el.textContent = status;
  el.className = "status st-" + status.toLowerCase();
}

function followSaga(root) {
  var es = new EventSource(root.dataset.events);
  es.addEventListener("saga", function (e) {
    var s = JSON.parse(e.data);
    root.dataset.version = String(s.version);
    setStatus(document.getElementById("saga-status"), s.status);
    setText(document.getElementById("saga-updated"), s.updated);
    s.steps.forEach(function (st, i) {
      var row = document.querySelector('tr[data-step="' + i + '"]');
      if (!row) { return; }
      setStatus(row.querySelector('[data-field="status"]'), st.status);
      setText(row.querySelector('[data-field="attempts"]'), String(st.attempts));
      setText(row.querySelector('[data-field="comp_attempts"]'), String(st.comp_attempts));
      setText(row.querySelector('[data-field="last_error"]'), st.last_error);
    });
    var actions = document.getElementById("actions");
    if (actions) {
      var retry = document.getElementById("retry-form"), abort = document.getElementById("abort-form");
      if (retry) { retry.hidden = s.status !== "FAILED"; }
      if (abort) { abort.hidden = s.status !== "RUNNING"; }
    }
  });
}

function followTx(root) {
  var es = new EventSource(root.dataset.events);
  es.addEventListener("tx", function (e) {
    var tx = JSON.parse(e.data);
    setStatus(document.getElementById("tx-state"), tx.state);
    if (tx.decision) { setText(document.getElementById("tx-decision"), tx.decision); }
    tx.participants.forEach(function (p, i) {
      var row = document.querySelector('tr[data-participant="' + i + '"]');
      if (!row) { return; }
      setText(row.querySelector('[data-field="vote"]'), p.vote);
      setText(row.querySelector('[data-field="acked"]'), p.acked);
      setText(row.querySelector('[data-field="sends"]'), String(p.sends));
      setText(row.querySelector('[data-field="blocked"]'), p.blocked);
      setText(row.querySelector('[data-field="last_error"]'), p.last_error);
    });
  });
}

function followCounts(root) {
  var es = new EventSource(root.dataset.events);
  es.addEventListener("counts", function (e) {
    var counts = JSON.parse(e.data);
    Object.keys(counts).forEach(function (k) {
      setText(root.querySelector('[data-count="' + k + '"]'), String(counts[k]));
    });
  });
}

function submitInPlace(form) {
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var out = document.getElementById("op-result");
    var button = form.querySelector("button");
    button.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      redirect: "manual"
    }).then(function (resp) {
      button.disabled = false;
      if (resp.type === "opaqueredirect" || resp.ok) {
        setText(out, "Done: the status below follows the saga.");
        form.reset();
        return;
      }
      return resp.text().then(function (t) { setText(out, "Refused (" + resp.status + "): " + t); });
    }).catch(function (err) {
      button.disabled = false;
      setText(out, "Failed: " + err);
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  var saga = document.getElementById("saga");
  if (saga && saga.dataset.events) { followSaga(saga); }
  var tx = document.getElementById("tx");
  if (tx && tx.dataset.events) { followTx(tx); }
  var counts = document.getElementById("counts");
  if (counts && counts.dataset.events) { followCounts(counts); }
  document.querySelectorAll("form.op").forEach(submitInPlace);
});
