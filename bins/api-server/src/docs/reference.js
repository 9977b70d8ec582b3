// The API reference page: reads /openapi.json from this server and lists every operation
// with its parameters, request body and responses, each with a "Try it" form. It builds
// the page with DOM calls only (no innerHTML), so nothing in the document runs as markup.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child);
  }
  return node;
}

// Follows a local "$ref" ("#/components/schemas/X") into the document.
function resolve(doc, schema) {
  let seen = 0;
  while (schema && schema.$ref && seen < 32) {
    const parts = schema.$ref.replace(/^#\//, "").split("/");
    schema = parts.reduce((at, key) => (at ? at[key] : undefined), doc);
    seen += 1;
  }
  return schema || {};
}

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

// A short type label: "string", "integer", "[TransactionView]", "ErrorBody".
function typeLabel(schema) {
  if (!schema) return "";
  const name = refName(schema);
  if (name) return name;
  if (schema.type === "array") return "[" + typeLabel(schema.items) + "]";
  if (Array.isArray(schema.type)) return schema.type.join(" | ");
  if (schema.oneOf) return schema.oneOf.map(typeLabel).join(" | ");
  return schema.type || "object";
}

// What a value may be: range, length, pattern, enum.
function limits(schema) {
  const out = [];
  if (schema.minimum !== undefined) out.push("min " + schema.minimum);
  if (schema.maximum !== undefined) out.push("max " + schema.maximum);
  if (schema.minLength !== undefined) out.push("min length " + schema.minLength);
  if (schema.maxLength !== undefined) out.push("max length " + schema.maxLength);
  if (schema.pattern) out.push("pattern " + schema.pattern);
  if (schema.enum) out.push("one of " + schema.enum.join(", "));
  return out.join("; ");
}

function schemaTable(doc, schema) {
  const resolved = resolve(doc, schema);
  const props = resolved.properties;
  if (!props) return el("p", { text: typeLabel(schema) });
  const required = new Set(resolved.required || []);
  const table = el("table", {},
    el("tr", {}, el("th", { text: "field" }), el("th", { text: "type" }),
      el("th", { text: "required" }), el("th", { text: "description" })));
  for (const [name, prop] of Object.entries(props)) {
    const inner = resolve(doc, prop);
    const detail = [prop.description || inner.description || "", limits(inner)]
      .filter(Boolean).join("; ");
    table.append(el("tr", {},
      el("td", {}, el("code", { text: name })),
      el("td", { text: typeLabel(prop) }),
      el("td", { text: required.has(name) ? "yes" : "" }),
      el("td", { text: detail })));
  }
  return el("div", {}, el("p", { text: typeLabel(schema) }), table);
}

function parameterTable(doc, params) {
  const table = el("table", {},
    el("tr", {}, el("th", { text: "name" }), el("th", { text: "in" }), el("th", { text: "type" }),
      el("th", { text: "required" }), el("th", { text: "description" })));
  for (const p of params) {
    const schema = resolve(doc, p.schema);
    const detail = [p.description || "", limits(schema)].filter(Boolean).join("; ");
    table.append(el("tr", {},
      el("td", {}, el("code", { text: p.name })),
      el("td", { text: p.in }),
      el("td", { text: typeLabel(p.schema) }),
      el("td", { text: p.required ? "yes" : "" }),
      el("td", { text: detail })));
  }
  return table;
}

function responsesList(doc, responses) {
  const list = el("ul");
  for (const [status, response] of Object.entries(responses || {})) {
    const answer = resolve(doc, response);
    const types = Object.entries(answer.content || {})
      .map(([type, media]) => type + (media.schema ? " " + typeLabel(media.schema) : ""));
    list.append(el("li", {},
      el("strong", { text: status }), " ",
      answer.description || "",
      types.length ? el("code", { text: " " + types.join(", ") }) : null));
  }
  return list;
}

function credentialHeaders(path) {
  const headers = {};
  const key = document.getElementById("api-key").value.trim();
  const admin = document.getElementById("admin-token").value.trim();
  if (path.startsWith("/admin/") && admin) headers["Authorization"] = "Bearer " + admin;
  else if (key) headers["x-api-key"] = key;
  return headers;
}

async function showAnswer(target, res) {
  target.replaceChildren();
  const head = [res.status + " " + res.statusText];
  res.headers.forEach((value, name) => head.push(name + ": " + value));
  target.append(el("pre", { text: head.join("\n") }));
  const type = res.headers.get("content-type") || "";
  if (type.startsWith("image/")) {
    const blob = await res.blob();
    target.append(el("img", { src: URL.createObjectURL(blob), alt: "the answer" }));
  } else if (type.startsWith("application/pdf")) {
    const blob = await res.blob();
    target.append(el("p", { text: "A PDF of " + blob.size + " bytes." }));
  } else {
    let text = await res.text();
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    target.append(el("pre", { text }));
  }
}

function tryForm(doc, path, method, op) {
  const params = op.parameters || [];
  const form = el("form", { class: "try" });
  const inputs = [];
  for (const p of params) {
    const input = el("input", { name: p.name, placeholder: typeLabel(p.schema) });
    inputs.push([p, input]);
    form.append(el("label", {}, p.name + " (" + p.in + (p.required ? ", required" : "") + ") ", input));
  }
  let body = null;
  const json = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (json) {
    body = el("textarea", { name: "body", spellcheck: "false" });
    body.value = exampleOf(doc, json.schema);
    form.append(el("label", { text: "JSON body" }), body);
  }
  const answer = el("div", { class: "answer" });
  form.append(el("button", { type: "submit", text: "Send " + method.toUpperCase() + " " + path }), answer);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    const headers = credentialHeaders(path);
    for (const [p, input] of inputs) {
      const value = input.value;
      if (value === "") continue;
      if (p.in === "path") url = url.replace("{" + p.name + "}", encodeURIComponent(value));
      else if (p.in === "query") query.append(p.name, value);
      else if (p.in === "header") headers[p.name] = value;
    }
    if ([...query].length) url += "?" + query.toString();
    const init = { method: method.toUpperCase(), headers, credentials: "same-origin" };
    if (body) {
      headers["Content-Type"] = "application/json";
      init.body = body.value;
    }
    try {
      await showAnswer(answer, await fetch(url, init));
    } catch (e) {
      answer.replaceChildren(el("p", { class: "error", text: "The request failed: " + e }));
    }
  });
  return form;
}

// A starting JSON body: each field with a placeholder of its type.
function exampleOf(doc, schema) {
  const resolved = resolve(doc, schema);
  if (!resolved.properties) return "{}";
  const out = {};
  for (const [name, prop] of Object.entries(resolved.properties)) {
    const inner = resolve(doc, prop);
    const type = Array.isArray(inner.type) ? inner.type.find((t) => t !== "null") : inner.type;
    out[name] = type === "number" || type === "integer" ? 0 : type === "boolean" ? false : "";
  }
  return JSON.stringify(out, null, 2);
}

function operationCard(doc, path, method, op) {
  const params = op.parameters || [];
  const body = el("div", { class: "op-body" });
  if (op.description) body.append(el("p", { text: op.description }));
  if (op.security) {
    const schemes = op.security.map((s) => Object.keys(s).join(" + ")).filter(Boolean);
    if (schemes.length) body.append(el("p", { text: "Security: " + schemes.join(" or ") }));
  }
  if (params.length) body.append(el("h4", { text: "Parameters" }), parameterTable(doc, params));
  const content = op.requestBody && op.requestBody.content;
  if (content) {
    for (const [type, media] of Object.entries(content)) {
      body.append(el("h4", { text: "Request body (" + type + ")" }), schemaTable(doc, media.schema));
    }
  }
  body.append(el("h4", { text: "Responses" }), responsesList(doc, op.responses));
  body.append(el("h4", { text: "Try it" }), tryForm(doc, path, method, op));
  return el("details", { class: "op", id: (method + path).replace(/[^A-Za-z0-9]+/g, "-") },
    el("summary", {},
      el("span", { class: "method " + method, text: method }), path,
      op.summary ? " - " + op.summary : ""),
    body);
}

function render(doc) {
  const main = document.getElementById("operations");
  const nav = document.getElementById("tags");
  main.replaceChildren();
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  for (const [tag, ops] of byTag) {
    nav.append(el("a", { href: "#tag-" + tag, text: tag }));
    const section = el("section", { id: "tag-" + tag }, el("h2", { text: tag }));
    for (const [path, method, op] of ops) section.append(operationCard(doc, path, method, op));
    main.append(section);
  }
}

async function load() {
  try {
    const res = await fetch("/openapi.json", { credentials: "same-origin" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    render(await res.json());
  } catch (e) {
    const status = document.getElementById("status");
    status.className = "error";
    status.textContent = "Could not load /openapi.json: " + e;
  }
}

document.addEventListener("DOMContentLoaded", load);
