// omnistitch agent desktop: look a customer up, show the unified context, follow it live.
//
// Plain browser JavaScript, no build step. Every piece of customer data is put in the page
// with textContent / setAttribute only (never innerHTML): chat messages, names and URLs
// are whatever customers typed.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { customerId: null, ctx: null, freshness: null, source: null, query: "" };
  const TIMELINE_PAGE = 50;

  // -- DOM helpers ---------------------------------------------------------------------
  // el("div", {class: "x", testid: "y", title: "t", data: {k: "v"}}, child, "text", ...)
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "testid") node.setAttribute("data-testid", value);
      else if (key === "data") {
        for (const [k, v] of Object.entries(value)) node.setAttribute(`data-${k}`, String(v));
      } else if (key === "title") node.title = String(value);
      else if (key === "hidden") node.hidden = true;
      else if (key === "datetime") node.setAttribute("datetime", String(value));
      else throw new Error(`el: unsupported property ${key}`);
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function text(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function time(iso, testid) {
    if (!iso) return el("span", { class: "muted" }, "–");
    const d = new Date(iso);
    const shown = isNaN(d) ? iso : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    return el("time", { datetime: iso, title: iso, testid }, shown);
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function section(title, testid, ...body) {
    return el("section", { class: "panel", testid }, el("h2", {}, title), ...body);
  }

  function badge(label, cls, title) {
    return el("span", { class: `badge ${cls || ""}`.trim(), title }, label);
  }

  // -- status line ---------------------------------------------------------------------
  function setLive(stateName, label) {
    const live = $("live");
    live.dataset.state = stateName;
    live.textContent = label;
  }

  function notice(message, kind) {
    const n = $("notice");
    n.textContent = message || "";
    n.className = `notice ${kind || ""}`.trim();
    n.hidden = !message;
    if (kind === "error") n.setAttribute("data-testid", "lookup-error");
    else n.setAttribute("data-testid", "notice");
  }

  // -- lookup and live stream ----------------------------------------------------------
  async function lookup(q) {
    state.query = q;
    notice("");
    setLive("idle", "looking up…");
    let resp;
    try {
      resp = await fetch(`/v1/lookup?q=${encodeURIComponent(q)}`, {
        headers: { Accept: "application/json" },
      });
    } catch (err) {
      setLive("error", "offline");
      notice(`The service did not answer (${err}).`, "error");
      return;
    }
    const body = await resp.json().catch(() => ({}));
    if (q !== state.query) return; // a newer lookup was typed meanwhile
    if (resp.status === 404) {
      closeStream();
      showCustomer(null);
      setLive("idle", "not connected");
      notice(`No customer matches “${q}”.`, "error");
      return;
    }
    if (!resp.ok) {
      setLive("error", "error");
      notice(body.message || `Lookup failed (${resp.status}).`, "error");
      return;
    }
    state.freshness = body.freshness || null;
    const matched = body.matched ? `Matched ${body.matched}` : "";
    const others = (body.matches || []).filter((m) => m.customer_id !== body.customer_id);
    notice(
      others.length
        ? `${matched}. Also matches other customers: ${others.map((m) => m.identifier).join(", ")}.`
        : matched,
      others.length ? "warning" : "",
    );
    showCustomer(body.customer);
    openStream(body.customer_id);
    const url = new URL(window.location.href);
    url.searchParams.set("q", q);
    window.history.replaceState(null, "", url);
  }

  function closeStream() {
    if (state.source) state.source.close();
    state.source = null;
  }

  function openStream(customerId) {
    closeStream();
    state.customerId = customerId;
    const source = new EventSource(`/v1/customers/${encodeURIComponent(customerId)}/stream`);
    state.source = source;
    setLive("connecting", "connecting…");
    source.onopen = () => setLive("live", "live");
    source.onerror = () => {
      if (state.source !== source) return;
      setLive(source.readyState === EventSource.CLOSED ? "error" : "connecting", "reconnecting…");
    };
    source.addEventListener("context", (e) => {
      if (state.source !== source) return;
      setLive("live", "live");
      const ctx = JSON.parse(e.data);
      if (state.ctx && state.ctx.customer_id === ctx.customer_id && state.ctx.version > ctx.version) {
        return; // an older version than the one shown
      }
      state.freshness = null; // the context's own version and updated_at say it now
      showCustomer(ctx);
    });
    source.addEventListener("merged", (e) => {
      const m = JSON.parse(e.data);
      state.customerId = m.into;
      notice(`Customer ${m.customer_id} was merged into ${m.into}; following ${m.into}.`, "info");
    });
    source.addEventListener("deleted", (e) => {
      const m = JSON.parse(e.data);
      closeStream();
      showCustomer(null);
      setLive("idle", "not connected");
      notice(`Customer ${m.customer_id} was erased.`, "error");
    });
    source.addEventListener("unavailable", () => setLive("connecting", "reconnecting…"));
  }

  // -- rendering -----------------------------------------------------------------------
  function showCustomer(ctx) {
    state.ctx = ctx;
    const root = $("customer");
    $("empty").hidden = Boolean(ctx);
    root.hidden = !ctx;
    if (!ctx) {
      root.replaceChildren();
      return;
    }
    const keepOpen = new Set(
      [...root.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key),
    );
    const shown = Number(root.dataset.timelineShown || TIMELINE_PAGE);
    root.replaceChildren(
      header(ctx),
      routingFlags(ctx),
      el(
        "div",
        { class: "columns" },
        el("div", { class: "side" }, identifiers(ctx), traits(ctx), consent(ctx), channels(ctx)),
        el("div", { class: "main" }, interactions(ctx), timeline(ctx, shown)),
      ),
    );
    root.dataset.customerId = ctx.customer_id;
    for (const d of root.querySelectorAll("details[data-key]")) {
      if (keepOpen.has(d.dataset.key)) d.open = true;
    }
  }

  function traitValue(ctx, name) {
    const t = (ctx.traits || {})[name];
    return t ? text(t.value) : "";
  }

  function header(ctx) {
    const name = traitValue(ctx, "name") || traitValue(ctx, "first_name") || "Unnamed customer";
    const f = state.freshness;
    const version = f && f.context_version != null ? f.context_version : ctx.version;
    const updated = (f && f.context_updated_at) || ctx.updated_at;
    return el(
      "div",
      { class: "who" },
      el("h2", { testid: "customer-name" }, name),
      el("code", { testid: "customer-id", title: "canonical customer id" }, ctx.customer_id),
      el(
        "span",
        {
          class: "freshness",
          testid: "freshness",
          data: { version },
          title: updated ? `context version ${version}, written ${updated}` : `version ${version}`,
        },
        `v${version}`,
        updated ? ` · updated ${ago(updated)}` : "",
      ),
      ctx.merged_from && ctx.merged_from.length
        ? el("span", { class: "muted", title: ctx.merged_from.join(", ") }, `merged from ${ctx.merged_from.length}`)
        : null,
    );
  }

  function routingFlags(ctx) {
    const r = ctx.routing || {};
    const flags = el("div", { class: "flags", testid: "routing" });
    const language = r.language || traitValue(ctx, "language") || traitValue(ctx, "locale");
    if (r.repeat_contact) {
      const rc = r.repeat_contact;
      flags.append(
        el(
          "span",
          {
            class: "flag alert",
            testid: "repeat-contact",
            title: `previous: ${rc.previous_interaction_id} (${rc.previous_channel}, ${rc.previous_status || "?"})`,
          },
          `Repeat contact · ${Math.round(rc.hours_since_previous * 10) / 10} h after a ${rc.previous_channel} contact`,
        ),
      );
    }
    if (r.vip) flags.append(el("span", { class: "flag vip", testid: "vip" }, "VIP"));
    if (r.unresolved_self_service) {
      const s = r.unresolved_self_service;
      flags.append(
        el("span", { class: "flag warn", testid: "unresolved-self-service", title: s.interaction_id }, `Tried self-service: ${s.what}`),
      );
    }
    flags.append(
      el("span", { class: "flag", testid: "language" }, `Language: ${language || "unknown"}`),
    );
    const last = r.last_agent;
    flags.append(
      el(
        "span",
        { class: "flag", testid: "last-agent", title: last ? `${last.interaction_id} at ${last.at}` : "" },
        last ? `Last agent: ${last.agent_name || last.agent_id} (${last.channel})` : "Last agent: none",
      ),
    );
    const open = r.open_conversations || [];
    flags.append(
      el(
        "span",
        { class: `flag ${open.length ? "open" : ""}`.trim(), testid: "open-conversations", data: { count: open.length } },
        open.length
          ? `Open: ${open.map((o) => `${o.channel} since ${new Date(o.since).toLocaleTimeString()}`).join(", ")}`
          : "No open conversation",
      ),
    );
    if ((r.contactable_channels || []).length) {
      flags.append(
        el("span", { class: "flag", testid: "contactable" }, `Reachable on: ${r.contactable_channels.join(", ")}`),
      );
    }
    return flags;
  }

  function identifiers(ctx) {
    const list = el("ul", { class: "plain" });
    for (const i of ctx.identifiers || []) {
      list.append(
        el(
          "li",
          { testid: "identifier", data: { type: i.type } },
          el("span", { class: "id-type" }, i.type),
          " ",
          el("span", { class: "id-value" }, i.value),
          i.verified ? badge("verified", "ok", "proved by the channel") : null,
        ),
      );
    }
    return section("Identifiers", "identifiers", list);
  }

  function traits(ctx) {
    const table = el("table", { class: "kv" });
    const entries = Object.entries(ctx.traits || {}).sort(([a], [b]) => a.localeCompare(b));
    for (const [name, t] of entries) {
      const provenance =
        `set by ${t.event_id} via ${t.channel}${t.source ? `/${t.source}` : ""} at ${t.observed_at}` +
        ` · rule ${t.rule || "most_recent"}${t.sightings > 1 ? ` · seen ${t.sightings}×` : ""}`;
      table.append(
        el(
          "tr",
          { testid: "trait", data: { name }, title: provenance },
          el("th", {}, name),
          el("td", {}, text(t.value), el("span", { class: "prov" }, `${t.channel} · ${ago(t.observed_at)}`)),
        ),
      );
    }
    if (!entries.length) table.append(el("tr", {}, el("td", { class: "muted" }, "No traits yet")));
    return section("Traits", "traits", table);
  }

  function consent(ctx) {
    const list = el("ul", { class: "plain" });
    const entries = Object.entries(ctx.consent || {}).sort(([a], [b]) => a.localeCompare(b));
    for (const [channel, c] of entries) {
      const out = c.status === "opted_out";
      list.append(
        el(
          "li",
          {
            class: out ? "opted-out" : "opted-in",
            testid: `consent-${channel}`,
            data: { status: c.status },
            title: `${c.source} event ${c.event_id} at ${c.observed_at}`,
          },
          el("strong", {}, channel),
          `: ${out ? "OPTED OUT, do not contact" : "opted in"}`,
        ),
      );
    }
    if (!entries.length) list.append(el("li", { class: "muted" }, "No consent decisions recorded"));
    return section("Consent", "consent", list);
  }

  function channels(ctx) {
    const list = el("ul", { class: "plain inline" });
    for (const [channel, n] of Object.entries(ctx.channel_counts || {})) {
      list.append(el("li", { data: { channel } }, `${channel}: ${n}`));
    }
    const archived = ctx.archived || {};
    return section(
      "Activity",
      "activity",
      list,
      el("p", { class: "muted" }, `First seen ${ctx.first_seen ? new Date(ctx.first_seen).toLocaleDateString() : "–"}, last seen ${ago(ctx.last_seen) || "–"}`),
      archived.events ? el("p", { class: "muted" }, `${archived.events} older events archived`) : null,
    );
  }

  // -- interactions --------------------------------------------------------------------
  function interactions(ctx) {
    const list = ctx.interactions && ctx.interactions.length ? ctx.interactions : fromTimeline(ctx.timeline || []);
    const body = el("div", { class: "cards" });
    for (const it of list) body.append(interactionCard(it));
    if (!list.length) body.append(el("p", { class: "muted" }, "No interactions yet"));
    return section("Interactions", "interactions", body);
  }

  // When the context has no interactions yet, group the timeline the same way: chats by
  // conversation, page views by channel, everything else on its own.
  function fromTimeline(entries) {
    const groups = new Map();
    const oldestFirst = [...entries].sort((a, b) => (a.occurred_at < b.occurred_at ? -1 : 1));
    for (const e of oldestFirst) {
      const p = e.properties || {};
      const isPage = e.kind === "page" || e.kind === "screen";
      const key =
        e.interaction_id ||
        (p.conversation_id ? `${e.channel}:${p.conversation_id}` : null) ||
        (p.call_id ? `call:${p.call_id}` : null) ||
        (isPage ? `visit:${e.channel}` : `event:${e.event_id}`);
      let g = groups.get(key);
      if (!g) {
        const kind = isPage ? "visit" : e.channel === "voice" ? "call" : e.channel === "email" ? "email_thread" : "conversation";
        g = {
          interaction_id: key, kind, channel: e.channel, source: e.source,
          started_at: e.occurred_at, last_at: e.occurred_at, messages: [], pages: [], products: [],
          ivr_path: [], derived: true,
        };
        groups.set(key, g);
      }
      g.last_at = e.occurred_at;
      if (isPage) {
        g.pages.push({ event_id: e.event_id, at: e.occurred_at, name: e.name, url: p.url || p.path, title: p.title });
      } else if (p.text !== undefined || p.body !== undefined) {
        g.messages.push({
          event_id: e.event_id, at: e.occurred_at, author: authorOf(p.author),
          text: text(p.text !== undefined ? p.text : p.body), agent_name: p.agent_name, subject: p.subject,
        });
      } else if (e.name) {
        g.outcome = e.name;
      }
    }
    return [...groups.values()].sort((a, b) => (a.last_at < b.last_at ? 1 : -1));
  }

  function authorOf(author) {
    if (author === "visitor" || author === "customer" || author === undefined) return "customer";
    return author;
  }

  function interactionCard(it) {
    const title = {
      conversation: "Conversation", call: "Call", email_thread: "Email thread",
      visit: "Web visit", self_service: "Self-service", notice: "Notice",
    }[it.kind] || it.kind;
    const facts = el("dl", { class: "facts" });
    const fact = (label, value, testid) => {
      if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return;
      facts.append(el("dt", {}, label), el("dd", { testid }, Array.isArray(value) ? value.join(" › ") : text(value)));
    };
    fact("Status", it.status, "interaction-status");
    fact("Direction", it.direction);
    fact("IVR path", it.ivr_path, "ivr-path");
    fact("Queue", it.queue, "queue");
    fact("Agent", it.agent_name || it.agent_id, "agent");
    fact("Outcome", it.outcome, "outcome");
    fact("Subject", it.subject);
    fact("Self-service", it.self_service);
    const card = el(
      "article",
      { class: `card kind-${it.kind}`, testid: "interaction", data: { kind: it.kind, channel: it.channel } },
      el(
        "header",
        {},
        el("strong", {}, title),
        badge(it.channel, `ch-${it.channel}`),
        it.derived ? badge("from timeline", "muted", "grouped from timeline entries") : null,
        el("span", { class: "when" }, time(it.started_at), it.last_at !== it.started_at ? [" – ", time(it.last_at)] : null),
      ),
      facts.childElementCount ? facts : null,
    );
    if (it.transcript) {
      card.append(el("h3", {}, "Transcript"), el("p", { class: "transcript", testid: "call-transcript" }, it.transcript));
    }
    if ((it.messages || []).length) {
      const msgs = el("ol", { class: "messages", testid: "transcript" });
      for (const m of it.messages) {
        const who = m.author === "agent" ? m.agent_name || m.agent_id || "agent" : m.author;
        msgs.append(
          el(
            "li",
            { class: `msg from-${m.author}`, testid: "message", data: { author: m.author } },
            el("span", { class: "author" }, who),
            el("span", { class: "text" }, m.subject ? `${m.subject}: ` : "", text(m.text)),
            el("span", { class: "when" }, time(m.at)),
          ),
        );
      }
      card.append(msgs);
    }
    if ((it.pages || []).length) {
      const pages = el("ol", { class: "pages" });
      for (const pg of it.pages) {
        pages.append(
          el(
            "li",
            { testid: "page", title: pg.url || "" },
            el("span", { class: "page-name" }, pg.name || pg.title || pg.url || "(page)"),
            pg.url ? el("span", { class: "url" }, pg.url) : null,
            el("span", { class: "when" }, time(pg.at)),
          ),
        );
      }
      card.append(el("h3", {}, "Pages"), pages);
    }
    if ((it.products || []).length) {
      const products = el("ul", { class: "plain" });
      for (const pr of it.products) {
        products.append(
          el(
            "li",
            { testid: "product", data: { action: pr.action } },
            `${pr.action.replace("_", " ")}: ${pr.name || pr.product_id || "product"}`,
            pr.price != null ? ` (${pr.price})` : "",
          ),
        );
      }
      card.append(el("h3", {}, "Products"), products);
    }
    if (it.dropped_items) card.append(el("p", { class: "muted" }, `${it.dropped_items} more items not kept`));
    return card;
  }

  // -- timeline ------------------------------------------------------------------------
  function timeline(ctx, shown) {
    const entries = ctx.timeline || [];
    const list = el("ol", { class: "timeline" });
    for (const e of entries.slice(0, shown)) list.append(timelineEntry(e));
    const more =
      entries.length > shown
        ? el("button", { class: "more", testid: "timeline-more" }, `Show ${Math.min(TIMELINE_PAGE, entries.length - shown)} older`)
        : null;
    if (more) {
      more.addEventListener("click", () => {
        $("customer").dataset.timelineShown = String(shown + TIMELINE_PAGE);
        showCustomer(state.ctx);
      });
    }
    if (!entries.length) list.append(el("li", { class: "muted" }, "Nothing yet"));
    return section(`Timeline (${entries.length})`, "timeline", list, more);
  }

  function summaryOf(e) {
    const p = e.properties || {};
    const parts = [];
    if (p.author && p.text !== undefined) parts.push(`${authorOf(p.author)}: ${text(p.text)}`);
    else if (p.text !== undefined) parts.push(text(p.text));
    if (p.subject) parts.push(text(p.subject));
    if (p.url || p.path) parts.push(text(p.url || p.path));
    if (p.digits || p.speech) parts.push(`IVR input: ${text(p.digits || p.speech)}`);
    if (p.queue) parts.push(`queue ${text(p.queue)}`);
    if (p.agent_name || p.agent_id) parts.push(`agent ${text(p.agent_name || p.agent_id)}`);
    if (p.reason) parts.push(text(p.reason));
    return parts.join(" · ");
  }

  function timelineEntry(e) {
    return el(
      "li",
      { class: `entry ch-${e.channel}`, testid: "timeline-entry", data: { event: e.event_id, kind: e.kind } },
      el("span", { class: "when" }, time(e.occurred_at)),
      badge(e.channel, `ch-${e.channel}`),
      el("span", { class: "kind" }, e.kind),
      e.name ? el("span", { class: "name", testid: "entry-name" }, e.name) : null,
      el("span", { class: "summary", testid: "entry-summary" }, summaryOf(e)),
      el(
        "details",
        { class: "raw", data: { key: e.event_id } },
        el("summary", {}, "raw"),
        el("pre", {}, JSON.stringify(e, null, 2)),
      ),
    );
  }

  // -- wiring --------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    const form = $("lookup");
    const input = $("q");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const q = input.value.trim();
      if (!q) return;
      $("customer").dataset.timelineShown = String(TIMELINE_PAGE);
      lookup(q);
    });
    const initial = new URL(window.location.href).searchParams.get("q");
    if (initial) {
      input.value = initial;
      lookup(initial);
    }
    // Relative times ("3 min ago") stay right without a new version.
    setInterval(() => {
      if (state.ctx) showCustomer(state.ctx);
    }, 30000);
  });
})();
