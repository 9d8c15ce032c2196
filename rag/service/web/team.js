// The page's team panel: the collection picker, the API key (kept in sessionStorage, for this tab only),
// the document list with delete, and the drop zone that uploads with a progress bar. Like app.js (whose
// el, authHeaders, currentCollection and errorMessage it uses), everything is inserted as text.
"use strict";

function teamStatus(message, isError) {
  const status = document.getElementById("team-status");
  status.textContent = message;
  status.className = isError ? "error" : "note";
}

async function loadCollections() {
  const select = document.getElementById("collection");
  const response = await fetch("/collections", { headers: authHeaders() });
  if (!response.ok) {
    teamStatus(await errorMessage(response), true);
    return;
  }
  const wanted = currentCollection();
  select.replaceChildren();
  for (const c of await response.json()) {
    const option = el("option", { value: c.name }, `${c.name} (${c.documents} documents)`);
    if (c.name === wanted) option.selected = true;
    select.append(option);
  }
  if (select.value !== wanted) sessionStorage.setItem("rag-collection", select.value || "default");
  await loadDocuments();
}

async function loadDocuments() {
  const list = document.getElementById("document-list");
  const name = currentCollection();
  const response = await fetch(`/collections/${encodeURIComponent(name)}/documents`, { headers: authHeaders() });
  if (!response.ok) {
    teamStatus(await errorMessage(response), true);
    return;
  }
  const documents = await response.json();
  document.getElementById("document-count").textContent = String(documents.length);
  list.replaceChildren();
  for (const d of documents) {
    const remove = el("button", { type: "button", className: "delete" }, "Delete");
    remove.addEventListener("click", () => deleteDocument(name, d.source));
    const size = d.bytes === null ? "" : `, ${d.bytes.toLocaleString()} bytes`;
    list.append(el("li", {}, el("span", { className: "doc-name" }, d.source),
      el("span", { className: "doc-meta" }, `${d.format}, ${d.passages} passages${size}`), remove));
  }
}

async function deleteDocument(name, source) {
  if (!window.confirm(`Delete ${source} from ${name}? Answers will no longer cite it.`)) return;
  const response = await fetch(`/collections/${encodeURIComponent(name)}/documents/${encodeURIComponent(source)}`,
                               { method: "DELETE", headers: authHeaders() });
  if (response.ok) teamStatus(`Deleted ${source}.`, false);
  else teamStatus(await errorMessage(response), true);
  await loadCollections();
}

/** Upload one file with a progress bar (XMLHttpRequest: fetch reports no upload progress). */
function uploadFile(file) {
  return new Promise((resolve) => {
    const name = currentCollection();
    const bar = document.getElementById("upload-progress");
    const form = new FormData();
    form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", `/collections/${encodeURIComponent(name)}/documents`);
    for (const [header, value] of Object.entries(authHeaders())) request.setRequestHeader(header, value);
    bar.hidden = false;
    bar.value = 0;
    request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; });
    request.addEventListener("load", () => {
      bar.hidden = true;
      let detail = request.statusText;
      let body = null;
      try { body = JSON.parse(request.responseText); detail = body.detail || detail; } catch (_) { /* not JSON */ }
      if (request.status === 201) teamStatus(`Added ${body.source}: ${body.passages} passages, answerable now.`, false);
      else teamStatus(`${file.name} was refused (HTTP ${request.status}): ${typeof detail === "string" ? detail : JSON.stringify(detail)}`, true);
      resolve();
    });
    request.addEventListener("error", () => {
      bar.hidden = true;
      teamStatus(`${file.name} could not be sent: the service could not be reached`, true);
      resolve();
    });
    teamStatus(`Uploading ${file.name}…`, false);
    request.send(form);
  });
}

async function uploadFiles(files) {
  for (const file of files) await uploadFile(file);
  await loadCollections();
}

async function createCollection() {
  const input = document.getElementById("new-collection");
  const name = input.value.trim();
  if (!name) return;
  const response = await fetch(`/collections/${encodeURIComponent(name)}`, { method: "PUT", headers: authHeaders() });
  if (!response.ok) {
    teamStatus(await errorMessage(response), true);
    return;
  }
  input.value = "";
  sessionStorage.setItem("rag-collection", name);
  teamStatus(`Collection ${name} is ready: drop files into it.`, false);
  document.getElementById("documents-box").open = true;
  await loadCollections();
}

function setUpTeamPanel() {
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("rag-token") || "";
  document.getElementById("use-token").addEventListener("click", () => {
    if (token.value.trim()) sessionStorage.setItem("rag-token", token.value.trim());
    else sessionStorage.removeItem("rag-token");
    teamStatus("", false);
    loadCollections();
  });
  document.getElementById("collection").addEventListener("change", (e) => {
    sessionStorage.setItem("rag-collection", e.target.value);
    loadDocuments();
  });
  document.getElementById("create-collection").addEventListener("click", createCollection);
  document.getElementById("file-input").addEventListener("change", (e) => uploadFiles([...e.target.files]));
  const zone = document.getElementById("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadFiles([...e.dataTransfer.files]);
  });
  loadCollections();
}

document.addEventListener("DOMContentLoaded", () => {
  if (!location.pathname.startsWith("/documents/")) setUpTeamPanel();
});
