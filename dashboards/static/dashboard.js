/* hpo dashboard: small pages that fetch JSON from the controller and draw Plotly figures.
   Every figure div gets data-traces (how many traces it drew) once it has rendered. */
"use strict";
const HPO = (() => {
  // the one vocabulary (hpo/vocabulary.py), carried by every page
  const VOCABULARY = JSON.parse(document.getElementById("hpo-vocabulary").textContent);
  const STATES = VOCABULARY.trial_states;
  const FINISHED = STATES.filter((s) => !VOCABULARY.live_trial_states.includes(s));
  const PLOT_CONFIG = { responsive: true, displaylogo: false };
  const LIVE_MS = 2000;

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status}: ${detail}`);
    }
    return response.json();
  }

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const enc = encodeURIComponent;
  const fmt = (v) => (v === null || v === undefined ? "–" :
    typeof v === "number" ? (Number.isInteger(v) ? String(v) : Number(v.toPrecision(5)).toString()) : String(v));
  const badge = (state) => h("span", { class: `badge state-${state}` }, state);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const seconds = (a, b) => (a && b ? ((new Date(b) - new Date(a)) / 1000).toFixed(1) + " s" : "–");
  const params = (p) => Object.entries(p).map(([k, v]) => `${k}=${fmt(v)}`).join(", ");

  async function plot(id, url, onData) {
    const div = document.getElementById(id);
    if (!div) return null;
    try {
      const fig = await getJSON(url);
      await Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
      div.dataset.traces = String(fig.data.length);
      div.classList.remove("error");
      if (onData) onData(fig);
      return fig;
    } catch (err) {
      div.classList.add("error");
      div.textContent = `could not draw this view: ${err.message}`;
      div.dataset.traces = "0";
      return null;
    }
  }

  // one titled figure per metric, into the container, each div id `${prefix}-${metric}`
  async function plotAll(containerId, prefix, figures) {
    const container = document.getElementById(containerId);
    for (const [metric, fig] of Object.entries(figures)) {
      const div = h("div", { class: "plot", id: `${prefix}-${metric}` });
      container.append(h("div", { class: "figure" }, h("h2", {}, metric), div));
      await Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
      div.dataset.traces = String(fig.data.length);
    }
  }

  function pager(container, total, offset, limit, go) {
    container.replaceChildren();
    if (total <= limit) return;
    const page = Math.floor(offset / limit) + 1, pages = Math.ceil(total / limit);
    container.append(
      h("button", { class: "button", disabled: offset === 0, onclick: () => go(offset - limit) }, "‹ prev"),
      h("span", { class: "muted" }, ` page ${page} of ${pages} (${total}) `),
      h("button", { class: "button", disabled: offset + limit >= total, onclick: () => go(offset + limit) }, "next ›"));
  }

  // ---------------------------------------------------------------- studies page
  function studiesPage() {
    const select = document.getElementById("status-filter");
    const body = document.querySelector("#studies-table tbody");
    const limit = 50;
    let offset = 0;
    async function load() {
      const status = select.value ? `&status=${enc(select.value)}` : "";
      const page = await getJSON(`/api/v1/studies?limit=${limit}&offset=${offset}${status}`);
      body.replaceChildren(...page.data.map(studyRow));
      document.getElementById("studies-empty").hidden = page.count > 0;
      pager(document.getElementById("studies-pager"), page.count, offset, limit, (o) => { offset = o; load(); });
      document.body.dataset.loaded = "studies";
    }
    select.addEventListener("change", () => { offset = 0; load(); });
    load();
    setInterval(load, 5000);
  }

  function progress(study) {
    const c = study.trial_counts;
    // a fork's inherited trials are history, not part of its budget
    const done = FINISHED.reduce((sum, s) => sum + (c[s] || 0), 0) - (study.inherited || 0);
    const size = study.size || Math.max(study.n_trials, 1);
    const pct = Math.min(100, Math.round((100 * done) / size));
    return h("div", { class: "progress", title: `${done} of ${study.size || "∞"} trials done` },
      h("div", { class: "bar", style: `width:${pct}%` }), h("span", {}, study.size ? `${pct}%` : `${done}`));
  }

  function studyRow(study) {
    const c = study.trial_counts;
    const alg = study.spec.algorithm;
    const counts = STATES.filter((s) => c[s]).map((s) => h("span", { class: `count state-${s}` }, `${c[s]} ${s}`));
    return h("tr", {},
      h("td", {}, h("a", { href: `/studies/${enc(study.name)}` }, study.name)),
      h("td", {}, badge(study.status)),
      h("td", {}, study.algorithm_choice ? `auto: ${study.algorithm_choice.summary}` :
        alg.name + (alg.name !== "asha" && alg.early_stopping && alg.early_stopping !== "none" ? ` + ${alg.early_stopping}` : "")),
      h("td", {}, study.spec.workload.name),
      h("td", { class: "counts" }, counts.length ? counts : "none yet"),
      h("td", {}, progress(study)),
      h("td", {}, study.best ? `${fmt(study.best.value)} (#${study.best.number})` : "–"),
      h("td", { class: "muted" }, when(study.created_at)),
      h("td", { class: "muted" }, study.created_by || "–"));
  }

  // ---------------------------------------------------------------- study page
  function studyPage() {
    const root = document.getElementById("study");
    const name = root.dataset.study, api = `/api/v1/studies/${enc(name)}`;
    const table = { sort: "number", order: "asc", state: "", offset: 0, limit: 25, selected: new Set() };
    let lastCounts = "", contourReady = false;

    async function refresh() {
      const study = await getJSON(api);
      renderSummary(study);
      const counts = JSON.stringify(study.trial_counts);
      if (counts !== lastCounts) {
        lastCounts = counts;
        await Promise.all([drawFigures(study), loadTrials()]);
      }
      document.body.dataset.loaded = "study";
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      if (study.status === VOCABULARY.live_study_status) setTimeout(refresh, LIVE_MS);
    }

    function renderSummary(study) {
      const c = study.trial_counts, spec = study.spec;
      const status = document.getElementById("study-status");
      status.textContent = study.status;
      status.className = `badge state-${study.status}`;
      document.getElementById("study-meta").textContent =
        `${spec.algorithm.name} on ${spec.workload.name} · ${spec.objective.direction} ${spec.objective.metric}` +
        ` · created ${when(study.created_at)}` + (study.created_by ? ` by ${study.created_by}` : "");
      const choice = document.getElementById("algorithm-choice");
      if (study.algorithm_choice) {
        choice.hidden = false;
        choice.replaceChildren(h("strong", {}, "auto chose: "), study.algorithm_choice.summary,
          h("span", { class: "reason" }, ` (${study.algorithm_choice.reason})`));
      }
      // which controller's dispatcher runs its trials, and why they wait for the Ray cluster
      const dispatch = document.getElementById("dispatch-status");
      dispatch.hidden = !study.dispatch;
      if (study.dispatch) {
        dispatch.replaceChildren(`dispatched by ${study.dispatch.holder}`,
          ...(study.dispatch.waiting ? [" · ", h("strong", { class: "waiting" }, "waiting:"), ` ${study.dispatch.waiting}`] : []));
      }
      document.getElementById("study-cards").replaceChildren(
        card("Trials", `${study.n_trials}${study.size ? " / " + study.size : ""}`, progress(study)),
        ...STATES.map((s) => card(s, c[s], null, `state-${s}`)),
        card("Best", study.best ? fmt(study.best.value) : "–", study.best ? `trial ${study.best.number}` : null));
      document.getElementById("spec-json").textContent = JSON.stringify(spec, null, 2);
      renderBudget(study);
      renderBest(study);
    }

    // progress toward every budget, from the server's numbers (budget_used)
    function renderBudget(study) {
      const used = study.budget_used;
      if (!used) return;
      const end = study.finished_at ? Date.parse(study.finished_at) : Date.now();
      const wall = Math.max(0, (end - Date.parse(study.created_at)) / 1000);
      const clock = (s) => { const t = Math.floor(s), m = Math.floor(t / 60) % 60, x = String(t % 60).padStart(2, "0");
        return t >= 3600 ? `${Math.floor(t / 3600)}:${String(m).padStart(2, "0")}:${x}` : `${m}:${x}`; };
      const hours = (v) => Number(v.toPrecision(3)).toString();
      const rows = [
        ["trials", "Trials", used.trials, used.max_trials, String],
        ["epochs", "Epochs", used.epochs, used.max_total_epochs, (v) => v.toLocaleString("en")],
        ["device-hours", `${used.device}-hours`, used.device_hours, used.max_gpu_hours, hours],
        ["wall", "Wall time", wall, used.max_wall_seconds, clock],
      ];
      document.getElementById("budget-body").replaceChildren(...rows.map(([key, label, value, limit, show]) => {
        const pct = limit ? Math.min(100, Math.round((100 * value) / limit)) : null;
        return h("tr", { "data-budget": key }, h("th", {}, label),
          h("td", { class: "used" }, show(value) + (limit ? ` / ${show(limit)}` : " (no limit)")),
          h("td", {}, pct === null ? null : h("div", { class: "progress", title: `${pct}% of ${label.toLowerCase()} used` },
            h("div", { class: "bar", style: `width:${pct}%` }), h("span", {}, `${pct}%`))));
      }));
    }

    function card(label, value, extra, cls) {
      return h("div", { class: `card ${cls || ""}` }, h("div", { class: "label" }, label),
        h("div", { class: "value" }, fmt(value)), extra ? h("div", { class: "extra" }, extra) : null);
    }

    function renderBest(study) {
      const body = document.getElementById("best-body");
      if (!study.best) return;
      const json = JSON.stringify(study.best.params, null, 2);
      const call = `from hpo.client import Client\nClient("${root.dataset.baseUrl.replace(/\/$/, "")}").best_config("${name}")`;
      body.className = "";
      body.replaceChildren(
        h("p", {}, `trial `, h("a", { href: `/studies/${enc(name)}/trials/${study.best.number}` }, `#${study.best.number}`),
          ` · ${study.spec.objective.metric} = ${fmt(study.best.value)}`),
        h("div", { class: "copyrow" },
          copyBlock("best-json", json, "Copy JSON"), copyBlock("best-call", call, "Copy client call")));
    }

    function copyBlock(id, text, label) {
      const pre = h("pre", { id }, text);
      const button = h("button", { class: "button", onclick: async () => {
        try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
        catch (e) { window.getSelection().selectAllChildren(pre); button.textContent = "Selected: press Ctrl-C"; }
        setTimeout(() => { button.textContent = label; }, 1500);
      } }, label);
      return h("div", { class: "copy" }, pre, button);
    }

    async function drawFigures(study) {
      await Promise.all([
        plot("fig-history", `${api}/figures/history`),
        plot("fig-curves", `${api}/figures/curves`, (fig) => {
          const m = fig.meta || {};
          document.getElementById("curves-note").textContent =
            m.total > m.shown ? `(${m.shown} of ${m.total} trials: running, best and most recent)` : "";
        }),
        plot("fig-parallel", `${api}/figures/parallel`),
        plot("fig-importance", `${api}/figures/importance`),
        plot("fig-slice", `${api}/figures/slice`),
        drawContour(study),
      ]);
    }

    async function drawContour(study) {
      const xs = document.getElementById("contour-x"), ys = document.getElementById("contour-y");
      const q = contourReady ? `?x=${enc(xs.value)}&y=${enc(ys.value)}` : "";
      return plot("fig-contour", `${api}/figures/contour${q}`, (fig) => {
        if (contourReady || !fig.meta) return;
        for (const [select, chosen] of [[xs, fig.meta.x], [ys, fig.meta.y]]) {
          select.replaceChildren(...fig.meta.params.map((p) => h("option", { value: p, selected: p === chosen }, p)));
          select.addEventListener("change", () => drawContour(study));
        }
        contourReady = true;
      });
    }

    async function loadTrials() {
      const q = `limit=${table.limit}&offset=${table.offset}&sort=${table.sort}&order=${table.order}` +
        (table.state ? `&state=${table.state}` : "");
      const page = await getJSON(`${api}/trials?${q}`);
      document.querySelector("#trials-table tbody").replaceChildren(...page.data.map(trialRow));
      pager(document.getElementById("trials-pager"), page.count, table.offset, table.limit,
        (o) => { table.offset = o; loadTrials(); });
      document.querySelectorAll("#trials-table th.sortable").forEach((th) => {
        th.classList.toggle("sorted", th.dataset.sort === table.sort);
        th.dataset.order = th.dataset.sort === table.sort ? table.order : "";
      });
    }

    function trialRow(t) {
      const box = h("input", { type: "checkbox", class: "pick", "data-number": t.number,
        checked: table.selected.has(t.number), onchange: (e) => {
          if (e.target.checked) table.selected.add(t.number); else table.selected.delete(t.number);
          document.getElementById("compare-button").disabled = table.selected.size < 2;
        } });
      return h("tr", { "data-number": t.number },
        h("td", {}, box),
        h("td", {}, h("a", { href: `/studies/${enc(name)}/trials/${t.number}` }, `#${t.number}`), inherited(t)),
        h("td", {}, badge(t.state)), h("td", {}, fmt(t.value)), h("td", {}, fmt(t.last_step)),
        h("td", { class: "params" }, params(t.params)), h("td", {}, t.attempts));
    }

    function inherited(t) {
      if (t.inherited_from === null || t.inherited_from === undefined) return null;
      const parent = root.dataset.parent, label = `#${t.inherited_from}`;
      return h("div", { class: "muted inherited" }, "inherited from ",
        parent ? h("a", { href: `/studies/${enc(parent)}/trials/${t.inherited_from}` }, `${parent} ${label}`) : label);
    }

    document.getElementById("trial-state").addEventListener("change", (e) => {
      table.state = e.target.value; table.offset = 0; loadTrials();
    });
    document.querySelectorAll("#trials-table th.sortable").forEach((th) => th.addEventListener("click", () => {
      table.order = table.sort === th.dataset.sort && table.order === "asc" ? "desc" : "asc";
      table.sort = th.dataset.sort; table.offset = 0; loadTrials();
    }));
    document.getElementById("compare-button").addEventListener("click", () => {
      const picked = [...table.selected].sort((a, b) => a - b).join(",");
      window.location.href = `/studies/${enc(name)}/compare?trials=${picked}`;
    });
    refresh();
  }

  // ---------------------------------------------------------------- trial page
  // the batch an attempt trained with: "batch 16 x 4 accumulation" (halved after running out of memory)
  const batchOf = (r) => (r.batch_size === null || r.batch_size === undefined ? "–" :
    `batch ${r.batch_size} x ${r.gradient_accumulation_steps} accumulation`);
  async function trialPage() {
    const root = document.getElementById("trial");
    const name = root.dataset.study, number = root.dataset.number;
    const api = `/api/v1/studies/${enc(name)}/trials/${number}`;
    const t = await getJSON(api);
    const state = document.getElementById("trial-state");
    state.textContent = t.state; state.className = `badge state-${t.state}`;
    const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, fmt(value)));
    document.getElementById("trial-cards").replaceChildren(
      card("Value", t.value), card("Epochs", t.last_step), card("Attempts", t.attempts),
      card("Duration", seconds(t.started_at, t.finished_at)));
    if (t.inherited_from !== null && t.inherited_from !== undefined) {  // copied at a fork
      const parent = root.dataset.parent, from = `#${t.inherited_from}`;
      document.getElementById("trial-cards").append(h("div", { class: "card", id: "inherited-card" },
        h("div", { class: "label" }, "Inherited from"), h("div", { class: "value" }, parent
          ? h("a", { href: `/studies/${enc(parent)}/trials/${t.inherited_from}` }, `${parent} ${from}`) : from)));
    }
    document.querySelector("#params-table tbody").replaceChildren(
      ...Object.entries(t.params).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(v)))));
    const failed = [...t.runs].reverse().find((r) => r.error);
    if (failed) {
      document.getElementById("failure-panel").hidden = false;
      document.getElementById("failure-reason").textContent =
        `attempt ${failed.attempt} · ${failed.failure_kind}\n${failed.error}`;
    }
    document.querySelector("#runs-table tbody").replaceChildren(...t.runs.map((r) => h("tr", {},
      h("td", {}, r.attempt), h("td", {}, badge(r.state)), h("td", {}, r.worker || "–"), h("td", {}, r.gpus || "–"),
      h("td", {}, when(r.worker_started_at || r.started_at)),
      h("td", {}, seconds(r.worker_started_at || r.started_at, r.finished_at)), h("td", {}, fmt(r.last_step)),
      h("td", {}, batchOf(r)), h("td", {}, r.failure_kind || "–"))));
    await plotAll("metric-figures", "fig-metric", await getJSON(`${api}/figures`));
    document.body.dataset.loaded = "trial";
  }

  // ---------------------------------------------------------------- compare trials
  async function compareTrialsPage() {
    const root = document.getElementById("compare");
    const name = root.dataset.study, trials = root.dataset.trials;
    const data = await getJSON(`/api/v1/studies/${enc(name)}/figures/compare?trials=${enc(trials)}`);
    const numbers = trials.split(",");
    document.querySelector("#compare-table thead").replaceChildren(h("tr", {}, h("th", {}, ""),
      ...numbers.map((n) => h("th", {}, h("a", { href: `/studies/${enc(name)}/trials/${enc(n)}` }, `#${n}`)))));
    document.querySelector("#compare-table tbody").replaceChildren(...data.params.map((row) =>
      h("tr", { class: row.differs ? "differs" : "" }, h("th", {}, row.name), ...row.values.map((v) => h("td", {}, fmt(v))))));
    await plotAll("compare-figures", "fig-compare", data.figures);
    document.body.dataset.loaded = "compare";
  }

  // ---------------------------------------------------------------- compare studies
  async function compareStudiesPage() {
    const root = document.getElementById("compare-studies");
    const wanted = new Set(root.dataset.studies.split(",").filter(Boolean));
    const page = await getJSON("/api/v1/studies?limit=1000");
    const picker = document.getElementById("study-picker");
    picker.replaceChildren(...page.data.map((s) => h("label", { class: "pick" },
      h("input", { type: "checkbox", value: s.name, checked: wanted.has(s.name) }),
      ` ${s.name} `, h("span", { class: "muted" }, `${s.spec.algorithm.name} · ${s.spec.workload.name}`))));
    async function draw() {
      const names = [...picker.querySelectorAll("input:checked")].map((i) => i.value);
      if (!names.length) return;
      history.replaceState(null, "", `/compare?studies=${names.map(enc).join(",")}`);
      await plot("fig-compare-studies", `/api/v1/figures/compare-studies?studies=${names.map(enc).join(",")}`);
      document.body.dataset.loaded = "compare-studies";
    }
    document.getElementById("draw-button").addEventListener("click", draw);
    if (wanted.size) await draw(); else document.body.dataset.loaded = "compare-studies";
  }

  // each page names itself (<body data-page="study">): no inline script, so the
  // Content-Security-Policy can allow scripts from the app alone
  const PAGES = {
    studies: studiesPage, study: studyPage, trial: trialPage,
    "compare-trials": compareTrialsPage, "compare-studies": compareStudiesPage,
  };
  const start = PAGES[document.body.dataset.page];
  if (start) start();

  return { studiesPage, studyPage, trialPage, compareTrialsPage, compareStudiesPage, getJSON };
})();
