// The page's only script (served from /static, so the Content-Security-Policy can forbid inline scripts).
// Every piece of document text, question and answer is inserted with textContent / text nodes, never as
// HTML: a document holding <script> or <img onerror=...> shows those characters and runs nothing.
"use strict";

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** The UTF-16 index (what String.slice counts) of code point `offset` in `text`. The API's offsets count
 * code points, as Python does: an emoji is one there and two UTF-16 units here, so every offset after one
 * would otherwise land a unit early. */
function utf16Index(text, offset) {
  let units = 0;
  for (let points = 0; points < offset && units < text.length; points++) {
    const code = text.codePointAt(units);
    units += code > 0xffff ? 2 : 1;
  }
  return units;
}

/** How many code points `text` holds (the API's length of it). */
function codePointLength(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.codePointAt(i) > 0xffff) i++;
    n++;
  }
  return n;
}

/** `text` with code points [start, end) wrapped in a <mark> (as DOM nodes, never HTML). */
function highlighted(text, start, end, markId) {
  const a = utf16Index(text, start);
  const b = a + utf16Index(text.slice(a), end - start);
  const mark = el("mark", markId ? { id: markId } : {}, text.slice(a, b));
  return [document.createTextNode(text.slice(0, a)), mark, document.createTextNode(text.slice(b))];
}

/** The score in words and number, e.g. "likely right, 0.82"; an uncalibrated reader's score is no
 * probability, and says so. */
function confidence(score, calibrated) {
  if (calibrated === false) return `uncalibrated score ${score.toFixed(2)} (not a probability)`;
  const words = score >= 0.7 ? "likely right" : score >= 0.5 ? "probably right" : "uncertain";
  return `${words}, ${score.toFixed(2)}`;
}

/** Where a citation or passage stands, in words: the file, and its page or heading where known. */
function place(item) {
  const parts = [item.source];
  if (item.page) parts.push(`page ${item.page}`);
  if (item.heading) parts.push(`under “${item.heading}”`);
  if (item.ocr) parts.push("read by OCR");
  return parts.join(", ");
}

/** Headers every API call carries: the API key of this tab, when one was given (team.js keeps it). */
function authHeaders() {
  const token = sessionStorage.getItem("rag-token");
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** The collection picked on the page (team.js), else "default". */
function currentCollection() {
  return sessionStorage.getItem("rag-collection") || "default";
}

function documentLink(source, start, end, label) {
  const collection = encodeURIComponent(currentCollection());
  const href = `/documents/${encodeURIComponent(source)}?start=${start}&end=${end}&collection=${collection}`;
  return el("a", { href, className: "source-link" }, label);
}

function passagesBlock(passages) {
  const list = el("ol", { className: "passages" });
  for (const p of passages) {
    list.append(el("li", {},
      el("div", { className: "passage-meta" },
        documentLink(p.source, p.start, p.end, place(p)), ` · score ${p.score.toFixed(3)}`),
      el("p", { className: "passage-text" }, p.text)));
  }
  return el("details", { className: "passages-box" },
    el("summary", {}, `Passages read (${passages.length})`), list);
}

function showAnswer(body) {
  const result = document.getElementById("result");
  result.replaceChildren();
  result.append(el("p", { className: "asked" }, "Question: ", el("q", {}, body.question)));
  if (body.answer === null) {
    result.append(el("div", { className: "abstain", id: "abstain" },
      el("p", { className: "abstain-title" }, "The documents do not say."),
      el("p", { className: "note" }, `No passage answers it with enough confidence (best candidate: ${body.score.toFixed(2)}).`)));
    if (body.passages.length) {
      const closest = el("ul", { className: "closest" });
      for (const p of body.passages.slice(0, 3)) {
        closest.append(el("li", {}, documentLink(p.source, p.start, p.end, place(p)), ": ",
          el("span", { className: "passage-text" }, p.text)));
      }
      result.append(el("p", {}, "The closest passages, for reading:"), closest);
    }
  } else {
    const cite = body.citations[0];
    const a = cite.start - cite.quote_start;
    const b = cite.end - cite.quote_start;
    result.append(el("div", { className: "answer", id: "answer" },
      el("p", { className: "answer-text" }, body.answer),
      el("p", { className: "confidence", id: "confidence" }, confidence(body.score, body.calibrated)),
      el("blockquote", { className: "quote", id: "quote" }, ...highlighted(cite.quote, a, b)),
      el("p", { className: "citation" }, "Source: ",
        documentLink(cite.source, cite.start, cite.end, place(cite)),
        ` (characters ${cite.start}–${cite.end})`)));
    if (body.citations.length > 1) {
      const also = el("p", { className: "note" }, "Also in: ");
      body.citations.slice(1).forEach((c, i) => {
        if (i) also.append(", ");
        also.append(documentLink(c.source, c.start, c.end, place(c)));
      });
      result.append(also);
    }
  }
  result.append(feedbackBar(body));
  for (const warning of body.warnings || []) result.append(el("p", { className: "warning" }, warning));
  if (body.passages.length) result.append(passagesBlock(body.passages));
}

function showError(message) {
  const result = document.getElementById("result");
  result.replaceChildren(el("p", { className: "error", id: "error", role: "alert" }, message));
}

async function errorMessage(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    detail = response.statusText || "no details";
  }
  const kinds = { 401: "An API key is needed (enter it above)", 403: "This key may not do that",
                  404: "Not found", 408: "The request took too long to send", 409: "Refused", 413: "The request is too large",
                  422: "The question cannot be asked that way", 503: "The service is busy; try again in a moment" };
  const kind = kinds[response.status] || (response.status >= 500 ? "The service failed to answer" : "The request was refused");
  return `${kind} (HTTP ${response.status}): ${detail}`;
}

async function ask(event) {
  event.preventDefault();
  const input = document.getElementById("question");
  const button = document.getElementById("ask-button");
  const spinner = document.getElementById("spinner");
  const question = input.value.trim();
  if (!question) return;
  button.disabled = true;
  spinner.hidden = false;
  try {
    const body = { question, collection: currentCollection() };
    const only = (document.getElementById("only-in") || { value: "" }).value.split(",").map((s) => s.trim()).filter(Boolean);
    if (only.length) body.sources = only;
    const response = await fetch("/ask", {
      method: "POST",
      headers: { "content-type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
    });
    if (response.ok) showAnswer(await response.json());
    else showError(await errorMessage(response));
  } catch (err) {
    showError(`The service could not be reached: ${err.message}`);
  } finally {
    button.disabled = false;
    spinner.hidden = true;
  }
}

async function showDocument() {
  const source = decodeURIComponent(location.pathname.slice("/documents/".length));
  const params = new URLSearchParams(location.search);
  document.getElementById("document-title").textContent = source;
  document.title = `${source} — Ask the documents`;
  const textBox = document.getElementById("document-text");
  const collection = params.get("collection") || "default";
  const response = await fetch(`/api/documents/${encodeURIComponent(source)}?collection=${encodeURIComponent(collection)}`,
                               { headers: authHeaders() });
  if (!response.ok) {
    textBox.replaceChildren(el("span", { className: "error", id: "error" }, await errorMessage(response)));
    return;
  }
  const doc = await response.json();
  if (doc.ocr_pages && doc.ocr_pages.length) {
    const pages = doc.ocr_pages.length === 1 ? `Page ${doc.ocr_pages[0]} was` : `Pages ${doc.ocr_pages.join(", ")} were`;
    document.getElementById("ocr-note").textContent = `${pages} read by OCR: its words may differ from the scan.`;
  }
  const start = Number.parseInt(params.get("start"), 10);
  const end = Number.parseInt(params.get("end"), 10);
  if (Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= codePointLength(doc.text)) {
    textBox.replaceChildren(...highlighted(doc.text, start, end, "cited"));
    document.getElementById("document-note").textContent = `The cited words are highlighted (characters ${start}–${end}).`;
    document.getElementById("cited").scrollIntoView({ block: "center" });
  } else {
    textBox.textContent = doc.text;
  }
  offerCorrection(source, collection, doc.text);
}

document.addEventListener("DOMContentLoaded", () => {
  if (location.pathname.startsWith("/documents/")) {
    document.getElementById("document-view").hidden = false;
    showDocument();
  } else {
    document.getElementById("ask-view").hidden = false;
    document.getElementById("ask-form").addEventListener("submit", ask);
    document.getElementById("question").focus();
  }
});
