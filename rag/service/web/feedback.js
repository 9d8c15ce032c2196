// Feedback on answers: "Right" / "Wrong" under each answer and abstention (POST /feedback). After "Wrong"
// the page keeps the question for this tab, and the document view offers to store the words the user
// selects there as the right answer. Offsets sent are code points, as the API's are.
"use strict";

function feedbackStatus(message, isError) {
  const status = document.getElementById("feedback-status");
  if (!status) return;
  status.textContent = message;
  status.className = isError ? "error" : "note";
}

async function postFeedback(record) {
  const response = await fetch("/feedback", {
    method: "POST",
    headers: { "content-type": "application/json", ...authHeaders() },
    body: JSON.stringify(record),
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  return (await response.json()).id;
}

/** The record of what was shown: the question, the answer (null for an abstention), its score and citation. */
function shown(body) {
  const cite = body.citations && body.citations[0];
  return { question: body.question, answer: body.answer, score: body.score, collection: currentCollection(),
           cited: cite ? { source: cite.source, start: cite.start, end: cite.end } : null };
}

function feedbackBar(body) {
  const record = shown(body);  // as asked: the collection picked now, not when a button is pressed
  const right = el("button", { type: "button", className: "small", id: "feedback-right" }, "Right");
  const wrong = el("button", { type: "button", className: "small", id: "feedback-wrong" }, "Wrong");
  const bar = el("div", { className: "feedback", id: "feedback" },
    el("span", {}, body.answer === null ? "Do the documents really not say? " : "Was this answer right? "),
    right, wrong, el("p", { id: "feedback-status", role: "status" }));
  const send = async (verdict) => {
    right.disabled = wrong.disabled = true;
    try {
      const id = await postFeedback({ ...record, verdict });
      if (verdict === "wrong") {
        sessionStorage.setItem("rag-correction", JSON.stringify(record));
        feedbackStatus(`Thank you (feedback ${id}). If a document holds the right answer, open it from a passage ` +
                       "below, select the right words and press “This is the answer”.", false);
      } else {
        feedbackStatus(`Thank you (feedback ${id}).`, false);
      }
    } catch (err) {
      right.disabled = wrong.disabled = false;
      feedbackStatus(err.message, true);
    }
  };
  right.addEventListener("click", () => send("right"));
  wrong.addEventListener("click", () => send("wrong"));
  return bar;
}

/** The code-point offsets of the selection inside `box` (whose text is the document's), or null. */
function selectedSpan(box, text) {
  const selection = window.getSelection();
  if (!selection || selection.rangeCount === 0 || selection.isCollapsed) return null;
  const range = selection.getRangeAt(0);
  if (!box.contains(range.startContainer) || !box.contains(range.endContainer)) return null;
  const before = document.createRange();
  before.selectNodeContents(box);
  before.setEnd(range.startContainer, range.startOffset);
  const a = before.toString().length;
  const b = a + range.toString().length;
  return { start: codePointLength(text.slice(0, a)), end: codePointLength(text.slice(0, b)) };
}

/** In the document view, after "Wrong": a bar to store the selected words as the right answer. */
function offerCorrection(source, collection, text) {
  const pending = JSON.parse(sessionStorage.getItem("rag-correction") || "null");
  if (!pending || pending.collection !== collection) return;
  const mark = el("button", { type: "button", className: "small", id: "mark-answer" }, "This is the answer");
  const bar = el("div", { className: "feedback", id: "correction" },
    el("span", {}, "Select the words that answer “", el("q", {}, pending.question), "”, then "), mark,
    el("p", { id: "feedback-status", role: "status" }));
  document.getElementById("document-note").after(bar);
  mark.addEventListener("click", async () => {
    const span = selectedSpan(document.getElementById("document-text"), text);
    if (!span) {
      feedbackStatus("Select the right words in the text first.", true);
      return;
    }
    try {
      const id = await postFeedback({ ...pending, verdict: "wrong", correct: { source, ...span } });
      sessionStorage.removeItem("rag-correction");
      mark.disabled = true;
      feedbackStatus(`Stored (feedback ${id}): “${text.slice(...utf16Span(text, span))}” answers it.`, false);
    } catch (err) {
      feedbackStatus(err.message, true);
    }
  });
}

/** UTF-16 [start, end) of a code-point span, for showing its words. */
function utf16Span(text, span) {
  const a = utf16Index(text, span.start);
  return [a, a + utf16Index(text.slice(a), span.end - span.start)];
}
